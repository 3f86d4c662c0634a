"""`supportflow feedback export`: humans' intent corrections in a real PostgreSQL as `nlu train --extra-train` rows."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from connectors.postgres import PostgresStore
from pipelines.cli import app
from pipelines.ml.evaluate import DEFAULT_REPO, latest_version
from pipelines.ml.feedback_export import model_labels
from pipelines.ml.train import add_training_rows
from schemas import Feedback, Message

runner = CliRunner()
T0 = datetime.now(UTC) - timedelta(days=3)


def message(n: int, text: str) -> Message:
    return Message(
        message_id=f"m{n}", conversation_id="conv-alice", customer_id="alice", channel="webchat", sender="web-a",
        text=text, received_at=T0 + timedelta(minutes=n),
    )  # fmt: skip


def correction(action: str, message_id: str, was: str, now: str, days: float = 0) -> Feedback:
    return Feedback(
        feedback_id=Feedback.derive_id(action, "intent_correction"), conversation_id="conv-alice",
        message_id=message_id, kind="intent_correction", original_intent=was, corrected_intent=now,
        author="agent-ann", at=T0 + timedelta(days=days, hours=1),
    )  # fmt: skip


def fill(dsn: str) -> None:
    async def go() -> None:
        store = PostgresStore(dsn)
        try:
            await store.migrate()
            await store.write(
                "sf.messages",
                [
                    message(1, 'I was charged twice for one order, "again"'),
                    message(2, "when does it get here,\nroughly?"),
                    message(3, "I want to speak about my warranty"),
                    message(4, "hello"),
                ],
            )
            await store.write(
                "sf.feedback",
                [
                    correction("c1", "m1", "get_refund", "complaint"),
                    correction("c1-later", "m1", "complaint", "payment_issue", days=1),  # the latest wins
                    correction("c2", "m2", "track_order", "delivery_period", days=2),
                    correction("c3", "m3", "review", "warranty_claim"),  # a label the model does not know
                    Feedback(
                        feedback_id="f-rating",
                        conversation_id="conv-alice",
                        message_id="m4",
                        kind="reply_rating",
                        rating=2,
                        author="agent-ann",
                        at=T0,
                    ),
                ],
            )
        finally:
            await store.close()

    asyncio.run(go())


def rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def test_export_writes_the_latest_correction_of_each_message_with_its_text(postgres_dsn, tmp_path: Path):
    fill(postgres_dsn)
    env = {"DATABASE_URL": postgres_dsn}
    out = tmp_path / "corrections.csv"
    result = runner.invoke(app, ["feedback", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "wrote 2 training row(s)" in result.output and "warranty_claim (1)" in result.output
    assert rows(out) == [
        ('I was charged twice for one order, "again"', "payment_issue"),
        ("when does it get here,\nroughly?", "delivery_period"),
    ]
    # what `nlu train --extra-train` does with the file: every row is accepted against the model's labels
    labels = sorted(model_labels(latest_version(DEFAULT_REPO)))
    texts, train_idx = list(labels), []  # one known row per label, standing in for the training data
    assert add_training_rows(texts, list(labels), train_idx, out, "text", "label") == 2

    everything = tmp_path / "all.csv"
    result = runner.invoke(app, ["feedback", "export", "--out", str(everything), "--all-labels"], env=env)
    assert result.exit_code == 0 and ("I want to speak about my warranty", "warranty_claim") in rows(everything)

    recent = tmp_path / "recent.csv"
    since = (T0 + timedelta(days=1, hours=2)).isoformat()
    result = runner.invoke(app, ["feedback", "export", "--out", str(recent), "--since", since], env=env)
    assert result.exit_code == 0 and rows(recent) == [("when does it get here,\nroughly?", "delivery_period")]


def test_bad_arguments_are_clear_errors(tmp_path: Path):
    missing = runner.invoke(app, ["feedback", "export", "--out", str(tmp_path / "nope" / "x.csv")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad = runner.invoke(app, ["feedback", "export", "--out", str(tmp_path / "x.csv"), "--since", "someday"])
    assert bad.exit_code == 2 and "invalid --since" in bad.output
    no_model = runner.invoke(app, ["feedback", "export", "--out", str(tmp_path / "x.csv"), "--model", str(tmp_path)])
    assert no_model.exit_code == 2 and "--all-labels" in no_model.output
