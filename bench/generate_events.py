"""Generate N realistic ConversationEvents, deterministically (same seed, same events).

Messages, intents and entity types come from the Bitext customer-support utterances in
`datasets/`; channels, conversation lengths, escalation reasons, latencies, sentiment and cost
follow fixed distributions. Used by `bench/analytics_bench.py`, and runnable on its own to fill an
events table for trying `supportflow analytics report`:

    PYTHONPATH=. python bench/generate_events.py --events 100000 --data-dir .supportflow
    PYTHONPATH=. python bench/generate_events.py --events 100000 --clickhouse-url clickhouse://localhost:9000/default
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.progress import Progress

from schemas import (
    ConversationEvent,
    EventAction,
    EventEntity,
    EventMessage,
    EventMetadata,
    EventNlu,
    EventResponse,
    EventSentiment,
)

DATASET = Path(__file__).resolve().parents[1] / "datasets/bitext-customer-support/bitext_customer_support_4514.csv"
CHANNELS = (("webchat", 45), ("email", 18), ("sms", 12), ("whatsapp", 12), ("mobile", 8), ("slack", 5))
ESCALATION_REASONS = (
    ("low_confidence", 40),
    ("negative_sentiment", 25),
    ("customer_requested_human", 20),
    ("keyword_trigger", 8),
    ("policy_block", 5),
    ("out_of_scope", 2),
)
ESCALATION_SHARE = 0.12
END = datetime(2025, 3, 8, tzinfo=UTC)
SPAN = timedelta(days=7)


def _utterances() -> list[tuple[str, str, str]]:
    with DATASET.open(newline="") as f:
        return [(row["instruction"], row["intent"], row["entity_type"]) for row in csv.DictReader(f)]


def generate_events(n: int, seed: int = 7, end: datetime = END, span: timedelta = SPAN) -> Iterator[ConversationEvent]:
    """n events over [end - span, end): conversations of 1-8 turns, ~12 % of turns handed to a human."""
    rng = random.Random(seed)
    utterances = _utterances()
    channels, channel_weights = zip(*CHANNELS, strict=True)
    reasons, reason_weights = zip(*ESCALATION_REASONS, strict=True)
    start_s, span_s = (end - span).timestamp(), span.total_seconds()
    produced, conversation = 0, 0
    while produced < n:
        conversation += 1
        customer = f"cust-{rng.randrange(n // 3 + 1):07d}"
        channel = rng.choices(channels, channel_weights)[0]
        at = start_s + rng.random() * (span_s - 3600)
        mood = rng.gauss(0.1, 0.35)  # a conversation's sentiment drifts around its own mood
        for turn in range(min(rng.randint(1, 8), n - produced)):
            text, intent, entity_type = rng.choice(utterances)
            escalated = rng.random() < ESCALATION_SHARE
            score = max(-1.0, min(1.0, mood + rng.gauss(0, 0.2)))
            label = "negative" if score < -0.25 else "positive" if score > 0.25 else "neutral"
            message_id = f"msg-{seed}-{conversation}-{turn}"
            event_type = "escalated" if escalated else "turn_processed"
            latency = math.exp(rng.gauss(math.log(650 if escalated else 900), 0.6))
            tokens = rng.randint(150, 1500)
            yield ConversationEvent(
                event_id="e-" + hashlib.sha256(f"{event_type}:{message_id}".encode()).hexdigest()[:24],
                event_type=event_type,
                timestamp=datetime.fromtimestamp(int(at), UTC),
                conversation_id=f"conv-{conversation:08d}",
                session_id=f"sess-{conversation:08d}",
                customer_id=customer,
                channel=channel,
                message=EventMessage(id=message_id, content=text, type="text"),
                nlu=EventNlu(
                    intent=intent,
                    confidence=round(rng.uniform(0.55, 0.99), 3),
                    entities=[EventEntity(type=entity_type, value="<REDACTED>", confidence=1.0)] if entity_type else [],
                    sentiment=EventSentiment(label=label, score=round(score, 3)),
                ),
                action=(
                    EventAction(type="escalation", name=rng.choices(reasons, reason_weights)[0], status="queued")
                    if escalated
                    else EventAction(type="tool", name=f"lookup_{intent}", status="succeeded")
                ),
                response=None if escalated else EventResponse(content=f"Reply about {intent}.", confidence=0.9),
                metadata=EventMetadata(latency_ms=round(latency, 1), model_used="keyword-v1", cost_usd=tokens * 2e-6),
            )
            produced += 1
            at += rng.uniform(20, 300)


def batches(n: int, size: int, seed: int = 7) -> Iterator[list[ConversationEvent]]:
    """generate_events in lists of `size`, with a rich progress bar."""
    batch: list[ConversationEvent] = []
    with Progress() as progress:
        task = progress.add_task(f"{n:,} events", total=n)
        for event in generate_events(n, seed):
            batch.append(event)
            if len(batch) == size:
                yield batch
                progress.advance(task, len(batch))
                batch = []
        if batch:
            yield batch
            progress.advance(task, len(batch))


async def _fill(n: int, size: int, seed: int, data_dir: Path | None, clickhouse_url: str | None) -> None:
    from connectors.clickhouse import ChdbEventStore, ClickHouseEventStore

    store = ClickHouseEventStore(clickhouse_url) if clickhouse_url else ChdbEventStore((data_dir or Path()) / "chdb")
    await store.migrate()
    try:
        for batch in batches(n, size, seed):
            await store.insert(batch)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=5000)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="insert into chdb at DATA_DIR/chdb")
    where.add_argument("--clickhouse-url", help="insert into this server")
    where.add_argument("--out", type=Path, help="write JSON lines instead")
    args = parser.parse_args()
    if args.out:
        with args.out.open("w") as f:
            for batch in batches(args.events, args.batch, args.seed):
                f.writelines(event.model_dump_json() + "\n" for event in batch)
    else:
        asyncio.run(_fill(args.events, args.batch, args.seed, args.data_dir, args.clickhouse_url))


if __name__ == "__main__":
    main()
