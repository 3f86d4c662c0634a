"""Customer profiles flow through sf.profiles into every worker: identity across channels, VIP context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.stream import produce_messages, raw_message, read_answers


def run_cli(*args: str, bootstrap: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["SUPPORTFLOW_KAFKA_EXACT_OFFSETS"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_an_imported_profile_names_the_customer_on_every_channel_and_rides_on_the_escalation(broker, workers, tmp_path):
    workers.ensure_topics()
    profiles = tmp_path / "profiles.jsonl"
    profiles.write_text(
        json.dumps(
            {
                "customer_id": "cust-ada",
                "display_name": "Ada Lovelace",
                "contacts": [
                    {"channel": "email", "address": "Ada@Example.com"},
                    {"channel": "sms", "address": "+14155550134"},
                ],
                "vip_tier": "gold",
                "language": "en",
            }
        )
        + "\n"
    )
    imported = run_cli("profiles", "import", str(profiles), bootstrap=broker.bootstrap, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "published 1 profile(s) to sf.profiles" in imported.stdout

    workers.start()  # loads sf.profiles before it reports ready
    produce_messages(
        broker.bootstrap,
        [
            # as the email listener and the Twilio webhook publish them, having checked the sender
            raw_message("pr-1", "email", "ada@example.com", "where is my order 12345?", address_verified=True),
            raw_message("pr-2", "sms", "+14155550134", "I want to talk to a human please", address_verified=True),
        ],
    )
    records = read_answers(broker.bootstrap, {"pr-1", "pr-2"})
    answers = {json.loads(r.value).get("in_reply_to") or json.loads(r.value)["message_id"]: r for r in records}
    assert set(answers) == {"pr-1", "pr-2"}
    assert {json.loads(r.value)["customer_id"] for r in records} == {"cust-ada"}, "both channels resolve to Ada"

    escalation = json.loads(answers["pr-2"].value)
    assert answers["pr-2"].topic == "sf.escalations"
    assert escalation["profile"]["display_name"] == "Ada Lovelace"
    assert escalation["priority"] == "high", "a gold customer's hand-over is raised one step"


def test_a_profiles_file_with_a_bad_line_publishes_nothing_and_names_the_line(broker, tmp_path):
    bad = tmp_path / "profiles.jsonl"
    bad.write_text('{"customer_id": "c-1"}\n{"customer_id": "c-2", "vip_tier": "diamond"}\nnot json\n')
    result = run_cli("profiles", "import", str(bad), bootstrap=broker.bootstrap, cwd=tmp_path)
    assert result.returncode == 1
    assert ":2" in result.stderr and "vip_tier" in result.stderr
    assert ":3" in result.stderr and "not JSON" in result.stderr
    assert "nothing was published" in result.stderr
