"""End-to-end latency of a knowledge-base question through the stack (issue 16): `python bench/kb_answer_bench.py`.

`supportflow run`'s stack on its embedded defaults (tansu, PostgreSQL with pgvector, chdb; the help center
ingested on first start; no language model, so answers are extractive), the ingress in a process of its
own. The help center's evaluation questions (`pipelines/evaluation/data/help_center_eval/`, written as
customers write, kept apart from the articles) are asked one at a time over web chat, each as a new
conversation; the latency is from the send to the answer on `sf.outbound` (a cited reply) or
`sf.escalations` (a hand-over with the passages). A question with an article in the qrels should be
answered, one from `unanswerable.jsonl` handed over; the JSON reports both counts beside the latencies, with the
commit, the settings and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "pipelines" / "evaluation" / "data" / "help_center_eval"


def summary(values: list[float]) -> dict[str, Any]:
    from pipelines.evaluation.bench import latency_summary

    return {"n": len(values), **latency_summary(values)}


def load_questions(limit: int | None) -> list[tuple[str, bool]]:
    """(text, whether an article answers it): the questions with an article in the qrels, then those the help
    center does not cover (`unanswerable.jsonl`), interleaved so a shortened run keeps both kinds."""
    answerable = set()
    for line in (EVAL / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, _, score = line.split("\t")
        if int(score) > 0:
            answerable.add(query_id)

    def rows(name: str) -> list[dict[str, str]]:
        return [json.loads(line) for line in (EVAL / name).read_text(encoding="utf-8").splitlines() if line.strip()]

    covered = [(r["text"], r["_id"] in answerable) for r in rows("queries.jsonl")]
    uncovered = [(r["text"], False) for r in rows("unanswerable.jsonl")]
    step = max(1, len(covered) // max(1, len(uncovered)))
    mixed: list[tuple[str, bool]] = []
    for i in range(0, len(covered), step):
        mixed += covered[i : i + step]
        if uncovered:
            mixed.append(uncovered.pop(0))
    return (mixed + uncovered)[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=None, help="ask only the first N questions (default: all)")
    parser.add_argument("--warm-up", type=int, default=5, help="questions of its own first, not counted (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "kb_answer_latency.json")
    args = parser.parse_args()
    console = Console()
    load_at_start = [round(x, 2) for x in os.getloadavg()]

    from pipelines.evaluation.bench import start_stack, stop_stack
    from pipelines.evaluation.bench_load import ask_one_at_a_time
    from pipelines.evaluation.provenance import source_state
    from pipelines.runtime.settings import Settings

    questions = load_questions(args.questions)
    # warm-up questions of their own (the articles' titles), so no measured question is asked twice
    titles = sorted(ROOT.glob("playbooks/help_center/*/*.md"))[: args.warm_up]
    warm_up = [f"tell me about {path.stem.replace('-', ' ')}" for path in titles]
    data_dir = Path(tempfile.mkdtemp(prefix="kb-answer-bench-"))
    console.print(f"starting the stack in {data_dir} (help center ingested on first start)")
    base = Settings()
    bench = start_stack(base, data_dir, [])
    try:
        conf = bench.settings.kafka_client_config()
        run = f"kb{int(time.time())}"
        with Progress(console=console) as bar:
            task = bar.add_task("warm-up", total=len(warm_up))
            asyncio.run(ask_one_at_a_time(bench.url, bench.credentials, conf, warm_up, run=run + "w",
                                          on_answer=lambda _: bar.advance(task)))  # fmt: skip
            task = bar.add_task("knowledge questions over web chat", total=len(questions))
            asked = asyncio.run(ask_one_at_a_time(bench.url, bench.credentials, conf, [t for t, _ in questions],
                                                  run=run, on_answer=lambda _: bar.advance(task)))  # fmt: skip
        settings = {k: v for k, v in bench.settings.model_dump(mode="json").items() if "secret" not in k}
    finally:
        stop_stack(bench)
    expected = [answerable for _, answerable in questions]
    replies = [a.latency_ms for a in asked if a.kind == "reply"]
    handovers = [a.latency_ms for a in asked if a.kind == "escalation"]
    pairs = list(zip(asked, expected, strict=True))
    results = {
        "questions": len(asked),
        "latency_ms_all": summary([a.latency_ms for a in asked]),
        "latency_ms_answered": summary(replies),
        "latency_ms_handed_over": summary(handovers),
        "outcomes": {
            "answerable_answered": sum(1 for a, e in pairs if e and a.kind == "reply"),
            "answerable_handed_over": sum(1 for a, e in pairs if e and a.kind != "reply"),
            "unanswerable_handed_over": sum(1 for a, e in pairs if not e and a.kind != "reply"),
            "unanswerable_answered": sum(1 for a, e in pairs if not e and a.kind == "reply"),
        },
    }
    out = {
        **source_state(),
        "command": " ".join(["python", *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "questions_files": [str((EVAL / name).relative_to(ROOT)) for name in ("queries.jsonl", "unanswerable.jsonl")],
        "warm_up": len(warm_up),
        "language_model": None,
        "settings": {k: settings[k] for k in sorted(settings) if k.startswith(("knowledge", "triton", "isolated"))},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        **results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    console.print_json(json.dumps(results))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
