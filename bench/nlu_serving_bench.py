"""What does serving the NLU model through Triton cost? Latency and throughput, Triton vs in process.

Run:

    .venv/bin/python bench/nlu_serving_bench.py [--repo triton_models] [--out bench/nlu_serving_results.json]

The model is the committed intent classifier (`triton_models/intent_classifier/`, the highest
version: fine-tuned all-MiniLM-L6-v2, int8 ONNX), on the embedded tritonserver (nvidia-pytriton
wheel, CPU config: python backend running the same model.onnx with onnxruntime) and in process
with onnxruntime. Texts are Bitext utterances. Every
figure goes through `FallbackIntentModel.classify`, the call the `nlu_model` operator makes: it
includes client-side tokenization and the micro-batcher (`max_wait_ms`).

- batch 1: one caller, one message at a time (each waits `max_wait_ms` for company, then goes alone);
- 32 concurrent: 32 conversations each sending its next message as soon as the last is answered;
  the batcher gathers them into batches of up to 32;
- throughput: messages/s of the 32-concurrent run, Triton vs in process.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from connectors.triton import EmbeddedTriton, FallbackIntentModel, build_intent_model
from pipelines.evaluation.provenance import source_state
from pipelines.runtime.settings import PROJECT_DIR

DATA = PROJECT_DIR / "datasets" / "bitext-customer-support" / "bitext_customer_support_4514.csv"


def utterances(n: int) -> list[str]:
    with DATA.open(newline="") as f:
        texts = [row["instruction"] for row in csv.DictReader(f)]
    return [texts[i % len(texts)] for i in range(n)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "messages": len(ms),
        "p50_ms": round(pct(ms, 50), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "messages_per_s": round(len(ms) / wall_s, 1),
    }


async def sequential(model: FallbackIntentModel, texts: list[str], expect: str) -> dict[str, float]:
    latencies = []
    started = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        prediction = await model.classify(text)
        latencies.append(time.perf_counter() - t0)
        assert prediction.model_used.startswith(expect), prediction.model_used
    return summary(latencies, time.perf_counter() - started)


async def concurrent(model: FallbackIntentModel, texts: list[str], callers: int, expect: str) -> dict[str, float]:
    latencies: list[float] = []
    per_caller = [texts[i::callers] for i in range(callers)]

    async def conversation(mine: list[str]) -> None:
        for text in mine:
            t0 = time.perf_counter()
            prediction = await model.classify(text)
            latencies.append(time.perf_counter() - t0)
            assert prediction.model_used.startswith(expect), prediction.model_used

    model.batcher.batch_sizes.clear()
    started = time.perf_counter()
    await asyncio.gather(*(conversation(m) for m in per_caller))
    result = summary(latencies, time.perf_counter() - started)
    result["mean_batch"] = round(statistics.fmean(model.batcher.batch_sizes), 1)
    return result


def median_round(runs: list[dict]) -> dict:
    """Each figure's median over the rounds."""
    return {
        scenario: {k: statistics.median(r[scenario][k] for r in runs) for k in runs[0][scenario]}
        for scenario in runs[0]
    }


async def measure(model: FallbackIntentModel, texts: list[str], n_seq: int, callers: int, expect: str) -> dict:
    await model.start()
    try:
        for text in texts[:20]:  # warm-up: sessions, gRPC channel, allocator
            await model.classify(text)
        await model.classify_many(texts[:64])
        return {
            "batch_1": await sequential(model, texts[:n_seq], expect),
            f"concurrent_{callers}": await concurrent(model, texts, callers, expect),
        }
    finally:
        await model.close()


async def raw_calls(repo: Path, grpc_url: str, texts: list[str], batch: int, reps: int) -> dict:
    """One pre-tokenized batch, alternately in process and through Triton: the serving overhead per call.

    The minimum is the figure least disturbed by other load on the machine.
    """
    from connectors.triton import IntentTokenizer, OnnxIntentModel, TritonIntentModel, find_version_dir

    version_dir = find_version_dir(repo, "intent_classifier")
    assert version_dir is not None
    tokens = IntentTokenizer.from_version_dir(version_dir).encode(texts[:batch])
    local, remote = OnnxIntentModel(version_dir), TritonIntentModel(grpc_url, timeout_s=30, retries=0)
    times: dict[str, list[float]] = {"in_process_ms": [], "triton_ms": []}
    try:
        for rep in range(reps + 2):
            t0 = time.perf_counter()
            local.run(tokens.input_ids, tokens.attention_mask)
            t1 = time.perf_counter()
            await remote.logits(tokens.input_ids, tokens.attention_mask)
            t2 = time.perf_counter()
            if rep >= 2:  # two warm-up calls
                times["in_process_ms"].append((t1 - t0) * 1000)
                times["triton_ms"].append((t2 - t1) * 1000)
    finally:
        await remote.close()
    out: dict = {"batch": batch, "seq": int(tokens.input_ids.shape[1]), "reps": reps}
    for name, values in times.items():
        out[name] = {"min": round(min(values), 2), "median": round(statistics.median(values), 2)}
    out["overhead_min_ms"] = round(out["triton_ms"]["min"] - out["in_process_ms"]["min"], 2)
    return out


def _version_label(repo: Path) -> str:
    from connectors.triton import find_version_dir

    version_dir = find_version_dir(repo, "intent_classifier")
    return f"intent_classifier/{version_dir.name}" if version_dir else "no model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=PROJECT_DIR / "triton_models", help="Triton model repository")
    parser.add_argument("--messages", type=int, default=1024, help="messages in the concurrent runs")
    parser.add_argument("--sequential", type=int, default=300, help="messages in the batch-1 runs")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--raw-reps", type=int, default=50, help="calls per side for the raw model-call figures")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "nlu_serving_results.json")
    args = parser.parse_args()
    texts = utterances(args.messages)

    def model(triton_url: str | None) -> FallbackIntentModel:
        return build_intent_model(
            args.repo,
            triton_url=triton_url,
            in_process_fallback=triton_url is None,  # the Triton run must never quietly answer in process
            timeout_s=10,
            retries=0,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
        )

    rounds: dict[str, list[dict]] = {"in_process_onnxruntime": [], "triton": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        server = EmbeddedTriton(args.repo, log_file=Path(tmp) / "tritonserver.log").start(timeout_s=120)
        ready_s = time.perf_counter() - started
        try:
            for _ in range(args.rounds):  # alternate, so a neighbour's load hits both alike
                rounds["in_process_onnxruntime"].append(
                    asyncio.run(measure(model(None), texts, args.sequential, args.callers, "onnxruntime:"))
                )
                rounds["triton"].append(
                    asyncio.run(measure(model(server.grpc_url), texts, args.sequential, args.callers, "triton:"))
                )
            raw = {
                f"batch_{b}": asyncio.run(raw_calls(args.repo, server.grpc_url, texts, b, args.raw_reps))
                for b in (1, args.max_batch)
            }
        finally:
            server.stop()
    results: dict = {name: median_round(runs) for name, runs in rounds.items()}
    results["triton"]["startup_to_ready_s"] = round(ready_s, 2)
    key = f"concurrent_{args.callers}"
    results["throughput_ratio_triton_over_in_process"] = round(
        results["triton"][key]["messages_per_s"] / results["in_process_onnxruntime"][key]["messages_per_s"], 3
    )
    results["raw_model_call"] = raw
    results["rounds"] = rounds
    results["setup"] = {
        "model": f"the committed intent classifier, {_version_label(args.repo)}: fine-tuned all-MiniLM-L6-v2, "
        "int8 ONNX (dynamic quantization)",
        "triton": "tritonserver 2.51 (nvidia-pytriton 0.7.0), configs/cpu.pbtxt: python backend + onnxruntime, "
        "dynamic batching",
        "client": "tritonclient.grpc.aio via FallbackIntentModel (client-side tokenization, MicroBatcher)",
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "callers": args.callers,
        "rounds": args.rounds,
        "figures": "median over rounds of each number",
        "cpus": os.cpu_count(),
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "tritonclient": version("tritonclient"),
    }
    results["measured_on"] = {
        **source_state(),
        "command": "python bench/nlu_serving_bench.py " + " ".join(sys.argv[1:]),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
