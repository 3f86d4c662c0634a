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
trainer, in `labels.json`) also becomes `out_of_scope`, and so does an `oos_score` above the
model's score threshold: models trained since issue 15 give that score (distance from the training
intents in the encoder's space combined with the classifier's own out-of-scope evidence, see
pipelines/ml/train.py), which catches off-topic text a confident softmax would let through.

Intents the model has no label for yet (`keyword_intents`: returns and exchanges, whose playbooks
came after the last training run) come from the keyword rules (`operators/nlu/keywords.py`): when
those rules name one of them at least `keyword_confidence` sure, it is the intent, whatever the
model said (it can only say its nearest label, `get_refund` or `change_order`). Everything else
is the model's.

The model client comes from the runtime (`ctx.clients.intent_model`, built in
`pipelines/runtime/clients.py`): Triton's address is the operator's `triton_url`, else
`Settings.triton_url`; `supportflow run` sets the latter to the embedded tritonserver it starts
(`connectors.triton.EmbeddedTriton`). Neither set: in-process onnxruntime only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from operators.base import OperatorConfig
from operators.keyword_nlu import IntentGuess, Nlu, NluConfig
from operators.nlu.keywords import OUT_OF_SCOPE, KeywordIntentClassifier
from operators.protocols import IntentModel, IntentModelOptions, OperatorContext


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
    keyword_intents: list[str] = Field(
        default_factory=lambda: ["return_items", "exchange_items"],
        description="intents the model has no label for: taken from the keyword rules when they are sure enough",
    )
    keyword_confidence: float = Field(
        default=0.85, ge=0.0, le=1.0, description="how sure the keyword rules must be to name a keyword intent"
    )
    oos_score_threshold: float | None = Field(
        default=None, description="oos_score above which the intent is out_of_scope; unset: the model's labels.json"
    )


class NluModel(Nlu):
    """`nlu` with the intent from the served model; entities and sentiment exactly as `nlu` finds them."""

    name = "nlu_model"
    Config: ClassVar[type[OperatorConfig]] = NluModelConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self.model: IntentModel | None = None

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: NluModelConfig = self.config  # type: ignore[assignment]
        self._entities.warm_up()
        self._sentiment.warm_up()
        options = IntentModelOptions(
            triton_url=cfg.triton_url,
            model_repository=cfg.model_repository,
            model_name=cfg.model_name,
            model_version=cfg.model_version,
            in_process_fallback=cfg.in_process_fallback,
            timeout_s=cfg.timeout_s,
            retries=cfg.retries,
            max_batch=cfg.max_batch,
            max_wait_ms=cfg.max_wait_ms,
            breaker_open_s=cfg.breaker_open_s,
            max_length=cfg.max_length,
        )
        self.model = ctx.require_clients(self.name).intent_model(options)
        if cfg.keyword_intents:
            self._classifier = KeywordIntentClassifier.load(cfg.keywords_file)

    @property
    def warmed_up(self) -> bool:
        return self.model is not None

    async def classify(self, text: str) -> IntentGuess:
        assert self.model is not None
        cfg: NluModelConfig = self.config  # type: ignore[assignment]
        if self._classifier is not None:
            intent, confidence, alternatives = self._classifier.classify(text)
            if intent in cfg.keyword_intents and confidence >= cfg.keyword_confidence:
                return IntentGuess(intent, confidence, "keywords-v1", alternatives)
        prediction = await self.model.classify(text)
        intent = prediction.intent
        threshold = self.model.oos_threshold if cfg.out_of_scope_threshold is None else cfg.out_of_scope_threshold
        score_threshold = self.model.oos_score_threshold if cfg.oos_score_threshold is None else cfg.oos_score_threshold
        weak = prediction.confidence < threshold
        far = (
            prediction.oos_score is not None and score_threshold is not None and prediction.oos_score > score_threshold
        )
        if prediction.available and (weak or far):
            intent = OUT_OF_SCOPE
        return IntentGuess(intent, prediction.confidence, prediction.model_used, list(prediction.alternatives))

    async def close(self) -> None:
        if self.model is not None:
            await self.model.close()
