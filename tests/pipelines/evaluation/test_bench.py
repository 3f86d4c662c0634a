"""`supportflow bench` at a tiny scale against the real embedded stack, and the figures' arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from pipelines.evaluation.bench import (
    BenchOptions,
    drift,
    keep_previous,
    run_bench,
    steady_rate,
    top_entries,
)
from pipelines.evaluation.bench_load import Driven, Turn, load_mix, plan, profiles_of
from pipelines.runtime.settings import Settings


@pytest.mark.timeout(300)
def test_a_tiny_run_answers_every_turn_through_the_ingress_and_acts_on_the_shop(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, http_port=0, workspace_port=0)
    options = BenchOptions(messages=120, concurrency=24, drift_messages=0, warm_up_messages=20, seed=3, one_stack=True)

    results = run_bench(settings, options, Console(quiet=True), command="test")

    measured = results["measured_on"]
    assert len(measured["commit"]) == 40 and isinstance(measured["dirty"], bool)
    assert "nlu_model" in json.dumps(measured["topology"]["stages"]["agent"])
    assert measured["machine"]["cpus"] and measured["texts"]["sha256"]
    assert results["bare_model"]["texts_per_s"] > 0
    throughput = results["throughput"]
    assert throughput["sent"] >= 120 and throughput["errors"] == {}
    assert throughput["answered"] == throughput["sent"]
    assert set(throughput["by_channel"]) == {"webchat", "mobile", "sms", "whatsapp"}
    assert throughput["escalations"] > 0 and throughput["replies"] > 0
    # the playbooks reached the shop: PostgreSQL's state changed for the bench's customers
    backend = throughput["backend"]
    assert backend["orders_cancelled"] >= 1 and backend["writes_by_tool"].get("orders.cancel_order", 0) >= 1
    assert backend["actions_stored_by_tool"].get("orders.get_order:succeeded", 0) >= 1  # stored by the sink
    assert backend["messages_stored"] >= throughput["sent"]
    # where the time went: the stack's processes by cores, the operators by mean ms (read off the workers)
    breakdown = throughput["breakdown"]
    assert {"tansu", "worker-0"} <= set(breakdown["cores_by_process"])
    assert breakdown["mean_ms_per_record"]["operator:nlu_model"]["records"] >= 1
    latency = results["latency"]
    assert latency["answered"] == latency["sent"] >= 120 and latency["latency_ms"]["p99"] > 0
    assert isinstance(latency["cores_timeline"], list)  # sampled every 30 s: a tiny run may end first
    assert latency["breakdown"]["mean_ms_per_record"]["operator:nlu_model"]["records"] >= latency["sent"]
    assert results["targets"]["e2e_over_bare_model"] > 0


def test_the_plan_covers_the_budget_and_gives_each_conversation_its_own_customer() -> None:
    conversations = plan(load_mix(), messages=500, extra_conversations=10, seed=0, first_index=0)

    assert sum(len(c.texts) for c in conversations[:-10]) >= 500
    assert len({c.customer_id for c in conversations}) == len(conversations)
    assert not any("{" in text for c in conversations for text in c.texts)  # every placeholder filled
    cancels = [c for c in conversations if c.script == "cancel_order"]
    assert cancels and all(
        any(o.number in c.texts[0] and o.status in ("pending", "processing") for o in c.customer.orders)
        for c in cancels
    )
    twilio = {c.customer_id for c in conversations if c.channel in ("sms", "whatsapp")}
    assert {p.customer_id for p in profiles_of(conversations)} == twilio


def test_drift_compares_windows_in_send_order() -> None:
    turns = [Turn(0, "s", "mobile", 0, sent_at=i, answered_at=i + (0.1 if i < 50 else 0.3)) for i in range(100)]

    result = drift(Driven(turns=turns), windows=4)

    assert [w["p50"] for w in result["windows"]] == [100.0, 100.0, 300.0, 300.0]
    assert result["upward_drift"] and result["slope_ms_per_10k"]["p50"] > 0


def test_steady_rate_leaves_out_the_ramp_and_the_drain() -> None:
    answers = [10.0 + i / 100 for i in range(1000)]  # 100/s for 10 s

    assert steady_rate([0.5, *answers], started=10.0, finished=20.0) == pytest.approx(100, rel=0.02)


def test_top_entries_count_own_and_total_time_per_function(tmp_path: Path) -> None:
    folded = tmp_path / "w.folded"
    folded.write_text(
        "process 1;thread (0x1);main (a/app.py:1);run (a/op.py:5);encode (b/tok.py:9) 30\n"
        "process 1;thread (0x1);main (a/app.py:1);run (a/op.py:6) 10\n"
    )

    top = top_entries(folded)

    assert top["samples"] == 40
    assert top["own"][0] == {"function": "encode (b/tok.py)", "samples": 30, "percent": 75.0}
    assert {"function": "run (a/op.py)", "samples": 40, "percent": 100.0} in top["total"]


def test_earlier_results_are_kept_under_their_commit(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"measured_on": {"commit": "abcdef0123456789"}}))

    kept = keep_previous(out)

    assert kept == tmp_path / "results_abcdef0_previous.json" and kept.exists() and not out.exists()
