"""A tiny intent model with the real interface, built with the `onnx` helper API (no torch).

`input_ids`, `attention_mask` (int64 [batch, seq]) → `logits` (float32 [batch, 27]): a random
embedding table, mean-pooled over the unmasked tokens, times a random matrix. Small enough to
build in milliseconds, mask-aware like the real transformer, so padding changes nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[2]
N_LABELS = 27
LABELS = [f"intent_{i:02d}" for i in range(N_LABELS)]
WORDS = [
    "where",
    "is",
    "my",
    "order",
    "cancel",
    "refund",
    "invoice",
    "payment",
    "delivery",
    "address",
    "account",
    "password",
    "change",
    "track",
    "shipping",
    "return",
    "item",
    "broken",
    "help",
    "want",
    "need",
    "please",
    "how",
    "can",
    "i",
    "the",
    "a",
    "to",
    "of",
    "for",
    "and",
]


def build_tiny_onnx(path: Path, vocab_size: int, dim: int = 16, seed: int = 7) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    emb = numpy_helper.from_array(rng.normal(size=(vocab_size, dim)).astype(np.float32), "emb")
    w = numpy_helper.from_array(rng.normal(scale=2.0, size=(dim, N_LABELS)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(N_LABELS,)).astype(np.float32), "b")
    axis1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")
    axis2 = numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),  # [B,S,D]
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),  # [B,S]
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),  # [B,S,1]
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),  # [B,D]
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),  # [B,1]
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["summed", "count1"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_intent",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", N_LABELS])],
        initializer=[emb, w, b, axis1, axis2, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_tiny_tokenizer(path: Path) -> int:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return len(vocab)


def make_model_repository(root: Path, version: str = "1") -> Path:
    """A repository like `triton_models/` (the real configs and model.py) with the tiny model in it."""
    source = PROJECT_DIR / "triton_models" / "intent_classifier"
    model_dir = root / "intent_classifier"
    (model_dir / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "config.pbtxt", model_dir / "config.pbtxt")
    shutil.copy2(source / "configs" / "cpu.pbtxt", model_dir / "configs" / "cpu.pbtxt")
    version_dir = model_dir / version
    version_dir.mkdir(exist_ok=True)
    shutil.copy2(source / "1" / "model.py", version_dir / "model.py")
    vocab_size = build_tiny_tokenizer(version_dir / "tokenizer.json")
    build_tiny_onnx(version_dir / "model.onnx", vocab_size)
    (version_dir / "labels.json").write_text(json.dumps(LABELS))
    return root
