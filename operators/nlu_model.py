"""nlu_model: intent from the trained classifier (Triton, or onnxruntime in process), entities and
sentiment as in `nlu`.

The intent comes from `connectors.triton.FallbackIntentModel`: concurrent records are batched
into one request to Triton; when Triton is unreachable or slow the same `model.onnx` answers in
process and `model_used` says so (`onnxruntime:intent_classifier:1` instead of
`triton:intent_classifier:1`). With no model at all the intent is `out_of_scope` at confidence
0 and `model_used="unavailable"`, so `route` escalates to a human. `run` never raises for a model
failure. A confidence under `out_of_scope_threshold` also becomes `out_of_scope`.

`triton_url` unset means no Triton: in-process onnxruntime only. The runtime passes the embedded
tritonserver's address when `Settings.triton_url` is unset (`connectors.triton.EmbeddedTriton`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from connectors.triton import FallbackIntentModel, build_intent_model
from operators._keywords import OUT_OF_SCOPE
from operators.base import OperatorConfig
from operators.nlu import IntentGuess, Nlu, NluConfig
from operators.protocols import OperatorContext

PROJECT_DIR = Path(__file__).resolve().parents[1]


class NluModelConfig(NluConfig):
    triton_url: str | None = Field(default=None, description="host:port of Triton's gRPC; unset: in process only")
    model_repository: Path = PROJECT_DIR / "triton_models"
    model_name: str = "intent_classifier"
    model_version: str | None = Field(default=None, description="unset: the highest version holding model.onnx")
    in_process_fallback: bool = True
    max_batch: int = Field(default=32, ge=1, le=64)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0, le=5)
    breaker_open_s: float = Field(default=5.0, gt=0)
    max_length: int = Field(default=128, ge=8, le=512)
    out_of_scope_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class NluModel(Nlu):
    """`nlu` with the intent from the served model; entities and sentiment exactly as `nlu` finds them."""

    name = "nlu_model"
    Config: ClassVar[type[OperatorConfig]] = NluModelConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self.model: FallbackIntentModel | None = None

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: NluModelConfig = self.config  # type: ignore[assignment]
        self._entities.warm_up()
        self._sentiment.warm_up()
        self.model = build_intent_model(
            cfg.model_repository,
            cfg.model_name,
            cfg.model_version,
            triton_url=cfg.triton_url,
            in_process_fallback=cfg.in_process_fallback,
            timeout_s=cfg.timeout_s,
            retries=cfg.retries,
            max_batch=cfg.max_batch,
            max_wait_ms=cfg.max_wait_ms,
            breaker_open_s=cfg.breaker_open_s,
            max_length=cfg.max_length,
        )

    @property
    def warmed_up(self) -> bool:
        return self.model is not None

    async def classify(self, text: str) -> IntentGuess:
        assert self.model is not None
        cfg: NluModelConfig = self.config  # type: ignore[assignment]
        prediction = await self.model.classify(text)
        intent = prediction.intent
        if prediction.available and prediction.confidence < cfg.out_of_scope_threshold:
            intent = OUT_OF_SCOPE
        return IntentGuess(intent, prediction.confidence, prediction.model_used, list(prediction.alternatives))

    async def close(self) -> None:
        if self.model is not None:
            await self.model.close()
