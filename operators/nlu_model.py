"""nlu_model: intent from the trained classifier (Triton, or onnxruntime in process), entities and
sentiment as in `nlu`.

Probabilities are calibrated: softmax(logits / temperature) with the temperature the trainer
fitted on held-out data (`labels.json`), so a confidence of 0.9 is right about 90% of the time
and `route`'s threshold means what it says.

The intent comes from `connectors.triton.FallbackIntentModel`: concurrent records are batched
into one request to Triton; when Triton is unreachable or slow the same `model.onnx` answers in
process and `model_used` says so (`onnxruntime:intent_classifier:1` instead of
`triton:intent_classifier:1`). With no model at all the intent is `out_of_scope` at confidence
0 and `model_used="unavailable"`, so `route` escalates to a human. `run` never raises for a model
failure. A confidence under the out-of-scope threshold (by default the one calibrated by the
trainer, in `labels.json`) also becomes `out_of_scope`.

Triton's address is the operator's `triton_url`, else `Settings.triton_url`; `supportflow run`
sets the latter to the embedded tritonserver it starts (`connectors.triton.EmbeddedTriton`).
Neither set: in-process onnxruntime only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from connectors.triton import FallbackIntentModel, build_intent_model
from operators.base import OperatorConfig
from operators.keyword_nlu import IntentGuess, Nlu, NluConfig
from operators.nlu.keywords import OUT_OF_SCOPE
from operators.protocols import OperatorContext

DEFAULT_REPOSITORY = Path(__file__).resolve().parents[1] / "triton_models"


class NluModelConfig(NluConfig):
    triton_url: str | None = Field(
        default=None, description="host:port of Triton's gRPC; unset: Settings.triton_url, else in process only"
    )
    model_repository: Path | None = Field(default=None, description="unset: Settings.model_repository")
    model_name: str = "intent_classifier"
    model_version: str | None = Field(default=None, description="unset: the highest version holding model.onnx")
    in_process_fallback: bool = True
    max_batch: int = Field(default=32, ge=1, le=64)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0, le=5)
    breaker_open_s: float = Field(default=5.0, gt=0)
    max_length: int | None = Field(default=None, ge=8, le=512, description="unset: the model's own")
    out_of_scope_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="unset: the calibrated threshold in the model's labels.json"
    )


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
        settings = ctx.settings if ctx is not None else None
        settings_url = getattr(settings, "triton_url", None)
        repository = cfg.model_repository or getattr(settings, "model_repository", None) or DEFAULT_REPOSITORY
        self.model = build_intent_model(
            repository,
            cfg.model_name,
            cfg.model_version,
            triton_url=cfg.triton_url or settings_url,
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
        threshold = self.model.meta.oos_threshold if cfg.out_of_scope_threshold is None else cfg.out_of_scope_threshold
        if prediction.available and prediction.confidence < threshold:
            intent = OUT_OF_SCOPE
        return IntentGuess(intent, prediction.confidence, prediction.model_used, list(prediction.alternatives))

    async def close(self) -> None:
        if self.model is not None:
            await self.model.close()
