"""Serving the intent model with Triton Inference Server, and its in-process fallback."""

from connectors.triton.client import (
    OOS_SCORE,
    UNAVAILABLE,
    CircuitBreaker,
    FallbackIntentModel,
    IntentTokenizer,
    ModelMeta,
    OnnxIntentModel,
    Prediction,
    Tokenized,
    TritonIntentModel,
    build_intent_model,
    find_version_dir,
    load_labels,
    load_model_meta,
    predictions,
    softmax,
)
from connectors.triton.server import EmbeddedTriton, TritonUnavailableError, pytriton_dir

__all__ = [
    "OOS_SCORE",
    "UNAVAILABLE",
    "CircuitBreaker",
    "EmbeddedTriton",
    "FallbackIntentModel",
    "IntentTokenizer",
    "ModelMeta",
    "OnnxIntentModel",
    "Prediction",
    "Tokenized",
    "TritonIntentModel",
    "TritonUnavailableError",
    "build_intent_model",
    "find_version_dir",
    "load_labels",
    "load_model_meta",
    "predictions",
    "pytriton_dir",
    "softmax",
]
