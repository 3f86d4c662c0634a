"""A small set of events whose report is known by hand, shared by the store and the CLI tests.

Window [2025-03-01, 2025-03-02) UTC. Ten conversations c0..c9 (c0..c5 web chat, c6..c9 SMS) of
ten agent replies each: latencies 10, 20, …, 1000 ms over the 100 replies, sentiment +0.5, all in
the first 30 minutes. Language models: c0..c7's 80 replies by the `small` tier (small-model, 300
tokens in, 50 out, $0.001 each), c8 and c9's 20 by two tiers (`large+small`: 900 in, 150 out,
$0.006 each; the last model small-model in c8, large-model in c9): $0.20 in all, $0.02 a
conversation. Three turns handed to a human at 12:00 (c1 and c2
for low_confidence, c7 because the customer asked), sentiment -0.8, no cost;
c7 then writes once more while with the human (a follow-up: a customer turn, not another
hand-over). Noise the report
must ignore: a session_closed event inside the window, and replies one second before it starts
and exactly when it ends.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import (
    ConversationEvent,
    EventAction,
    EventEntity,
    EventKnowledge,
    EventMessage,
    EventMetadata,
    EventNlu,
    EventResponse,
    EventSentiment,
    Feedback,
)

SINCE = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = datetime(2025, 3, 2, tzinfo=UTC)


def _event(
    event_id: str,
    event_type: str,
    at: datetime,
    conversation: int | str,
    intent: str,
    latency_ms: float,
    cost_usd: float,
    sentiment: tuple[str, float],
    action: EventAction | None = None,
    model_used: str = "triton:intent_classifier:1",
    llm: tuple[str, str, int, int] = ("", "", 0, 0),
) -> ConversationEvent:
    """`llm` is (tier, model, tokens in, tokens out); the default is a turn without a language model."""
    channel = "webchat" if isinstance(conversation, int) and conversation < 6 else "sms"
    return ConversationEvent(
        event_id=event_id,
        event_type=event_type,  # type: ignore[arg-type]
        timestamp=at,
        conversation_id=f"c{conversation}",
        session_id=f"s{conversation}",
        customer_id=f"u{conversation}",
        channel=channel,
        message=EventMessage(id=f"m-{event_id}", content="where's my order \\ 1234567? ✓", type="text"),
        nlu=EventNlu(
            intent=intent,
            confidence=0.9,
            entities=[EventEntity(type="order_id", value="1234567", confidence=1.0)],
            sentiment=EventSentiment(label=sentiment[0], score=sentiment[1]),
        ),
        action=action,
        response=EventResponse(content="on its way", confidence=0.9) if event_type == "turn_processed" else None,
        metadata=EventMetadata(
            latency_ms=latency_ms,
            model_used=model_used,
            cost_usd=cost_usd,
            llm_tier=llm[0],
            llm_model=llm[1],
            llm_tokens_in=llm[2],
            llm_tokens_out=llm[3],
        ),
    )


def known_events() -> list[ConversationEvent]:
    events: list[ConversationEvent] = []
    for c in range(10):
        llm = (
            ("small", "small-model", 300, 50)
            if c < 8
            else ("large+small", "small-model" if c == 8 else "large-model", 900, 150)
        )
        for k in range(10):
            n = c * 10 + k
            events.append(
                _event(
                    f"r{n}",
                    "turn_processed",
                    SINCE + timedelta(seconds=10 * n),
                    c,
                    "track_order" if c % 2 == 0 else "get_refund",
                    latency_ms=10.0 * (n + 1),
                    cost_usd=0.001 if c < 8 else 0.006,
                    sentiment=("positive", 0.5),
                    model_used="onnxruntime:intent_classifier:1" if c == 9 else "triton:intent_classifier:1",
                    llm=llm,
                )
            )
    for c, reason in ((1, "low_confidence"), (2, "low_confidence"), (7, "customer_requested_human")):
        action = EventAction(type="escalation", name=reason, status="queued")
        at = SINCE + timedelta(hours=12)
        events.append(_event(f"x{c}", "escalated", at, c, "complaint", 50.0, 0.0, ("negative", -0.8), action))
    # c7 writes again while with the human: a customer turn, but not a second hand-over
    follow_up = EventAction(type="escalation", name="with_human", status="follow_up")
    at = SINCE + timedelta(hours=12, minutes=1)
    events.append(_event("x7b", "escalated", at, 7, "complaint", 50.0, 0.0, ("negative", -0.8), follow_up))
    events.append(
        ConversationEvent(
            event_id="closed-c0",
            event_type="session_closed",
            timestamp=SINCE + timedelta(hours=1),
            conversation_id="c0",
            session_id="s0",
            customer_id="u0",
            channel="webchat",
            metadata=EventMetadata(latency_ms=0.0, model_used=""),
        )
    )
    for name, at in (("early", SINCE - timedelta(seconds=1)), ("late", UNTIL)):
        events.append(
            _event(
                name,
                "turn_processed",
                at,
                name,
                "track_order",
                99_999.0,
                5.0,
                ("negative", -1.0),
                llm=("large", "large-model", 10_000, 1_000),
            )
        )
    return events


# What the report over [SINCE, UNTIL) must say; floats are compared with pytest.approx, and the
# latency percentiles within one rank (10 ms), since exact-quantile rank conventions differ.
EXPECTED = {
    "since": "2025-03-01T00:00:00Z",
    "until": "2025-03-02T00:00:00Z",
    "bucket_seconds": 1800,
    "turns": 104,
    "conversations": 10,
    "volume_by_channel": [
        {"channel": "webchat", "turns": 62, "conversations": 6},
        {"channel": "sms", "turns": 42, "conversations": 4},
    ],
    "volume_by_intent": [
        {"intent": "get_refund", "turns": 50},
        {"intent": "track_order", "turns": 50},
        {"intent": "complaint", "turns": 4},
    ],
    "turns_by_model": [
        {"model_used": "triton:intent_classifier:1", "turns": 94},
        {"model_used": "onnxruntime:intent_classifier:1", "turns": 10},
    ],
    "resolved_autonomously": 7,
    "autonomous_resolution_rate": 0.7,
    "escalated_turns": 3,
    "escalation_rate": 3 / 104,
    "escalation_reasons": [
        {"reason": "low_confidence", "escalations": 2},
        {"reason": "customer_requested_human", "escalations": 1},
    ],
    "knowledge_gaps": [],
    "knowledge": {  # no turn searched the knowledge base
        "low_confidence_margin": 0.1,
        "grouping": "nothing to group",
        "by_domain": [],
        "articles": [],
        "low_confidence": [],
    },
    "reply_latency": {"replies": 100, "p50_ms": 500.0, "p95_ms": 950.0, "p99_ms": 990.0},
    "sentiment_trend": [
        {"bucket_start": "2025-03-01T00:00:00Z", "turns": 100, "mean_score": 0.5, "negative_share": 0.0},
        {"bucket_start": "2025-03-01T12:00:00Z", "turns": 4, "mean_score": -0.8, "negative_share": 1.0},
    ],
    "total_cost_usd": 0.2,
    "cost_per_conversation_usd": 0.02,
    "turns_by_llm_tier": [
        {
            "tier": "small",
            "turns": 80,
            "share": 80 / 104,
            "tokens_in": 24_000,
            "tokens_out": 4_000,
            "total_cost_usd": 0.08,
            "cost_per_turn_usd": 0.001,
            "models": ["small-model"],
        },
        {
            "tier": "large+small",
            "turns": 20,
            "share": 20 / 104,
            "tokens_in": 18_000,
            "tokens_out": 3_000,
            "total_cost_usd": 0.12,
            "cost_per_turn_usd": 0.006,
            "models": ["large-model", "small-model"],
        },
        {
            "tier": "none (no LLM)",  # the four hand-overs
            "turns": 4,
            "share": 4 / 104,
            "tokens_in": 0,
            "tokens_out": 0,
            "total_cost_usd": 0.0,
            "cost_per_turn_usd": 0.0,
            "models": [],
        },
    ],
    "human": {  # no feedback inserted
        "csat": {"answers": 0, "mean_rating": None, "satisfied_share": None},
        "csat_by_channel": [],
        "handle_time": [],
        "first_response": {"resolutions": 0, "p50_s": None, "p90_s": None},
        "intent_corrections": [],
    },
}


def _feedback(n: str, kind: str, hours: float = 6, **fields: Any) -> Feedback:
    return Feedback(
        feedback_id=Feedback.derive_id(f"action-{n}"),
        conversation_id=f"c{n}",
        kind=kind,  # type: ignore[arg-type]
        author=fields.pop("author", "agent-ann"),
        at=SINCE + timedelta(hours=hours),
        **fields,
    )


def known_feedback() -> list[Feedback]:
    """Feedback whose figures are worked out by hand (EXPECTED_HUMAN), with noise the queries must ignore.

    CSAT in the window: web chat 5, 4, 2; SMS 5, 5, 1, 3; one answer without a channel, 4. Eleven
    resolutions with handle and first response times, where the percentiles are the same under
    every exact-quantile rank convention: `solved` handle times 100 x3, 200 x5, 300 x2; `refunded`
    900; first responses 30 x5, 60 x3, 120 x3. Corrections get_refund -> cancel_order twice,
    track_order -> delivery_period once, and one without the original intent.
    """
    csat = [("webchat", 5), ("webchat", 4), ("webchat", 2), ("sms", 5), ("sms", 5), ("sms", 1), ("sms", 3), (None, 4)]
    records = [
        _feedback(f"csat{i}", "csat", author="customer", channel=channel, rating=rating, comment="Ann at +1 555 0100")
        for i, (channel, rating) in enumerate(csat)
    ]
    handle = [("solved", 100.0)] * 3 + [("solved", 200.0)] * 5 + [("solved", 300.0)] * 2 + [("refunded", 900.0)]
    first = [30.0] * 5 + [60.0] * 3 + [120.0] * 3
    records += [
        _feedback(
            f"res{i}",
            "resolution",
            resolution_code=code,
            handle_time_s=seconds,
            first_response_s=first[i],
            agent_id="agent-ann",
            escalation_id=f"x{i}",
        )
        for i, (code, seconds) in enumerate(handle)
    ]
    corrections = [("get_refund", "cancel_order"), ("get_refund", "cancel_order"), ("track_order", "delivery_period")]
    records += [
        _feedback(f"fix{i}", "intent_correction", original_intent=was, corrected_intent=now, message_id=f"m-fix{i}")
        for i, (was, now) in enumerate(corrections)
    ]
    records.append(_feedback("fix-unknown", "intent_correction", corrected_intent="complaint"))
    # noise: outside the window, other kinds with ratings, a resolution without times, a replayed action
    records += [
        _feedback("csat-early", "csat", hours=-1, author="customer", channel="webchat", rating=1),
        _feedback("csat-late", "csat", hours=24, author="customer", channel="webchat", rating=1),
        _feedback("rating", "reply_rating", rating=1, message_id="m-r1"),
        _feedback("res-untimed", "resolution", resolution_code="solved"),
        _feedback("fix-late", "intent_correction", hours=24, original_intent="a", corrected_intent="b"),
        records[0].model_copy(),
        records[9].model_copy(),
    ]
    return records


EXPECTED_HUMAN = {
    "csat": {"answers": 8, "mean_rating": 29 / 8, "satisfied_share": 5 / 8},
    "csat_by_channel": [
        {"answers": 4, "mean_rating": 3.5, "satisfied_share": 0.5, "channel": "sms"},
        {"answers": 3, "mean_rating": 11 / 3, "satisfied_share": 2 / 3, "channel": "webchat"},
        {"answers": 1, "mean_rating": 4.0, "satisfied_share": 1.0, "channel": "unknown"},
    ],
    "handle_time": [
        {"resolution_code": "solved", "resolutions": 10, "p50_s": 200.0, "p90_s": 300.0},
        {"resolution_code": "refunded", "resolutions": 1, "p50_s": 900.0, "p90_s": 900.0},
    ],
    "first_response": {"resolutions": 11, "p50_s": 60.0, "p90_s": 120.0},
    "intent_corrections": [
        {"original": "get_refund", "corrected": "cancel_order", "corrections": 2},
        {"original": "(unknown)", "corrected": "complaint", "corrections": 1},
        {"original": "track_order", "corrected": "delivery_period", "corrections": 1},
    ],
}
EXPECTED_WITH_FEEDBACK = {**EXPECTED, "human": EXPECTED_HUMAN}
LATENCY_TOLERANCE_MS = 10.0


def assert_report_matches(actual: dict[str, Any], expected: dict[str, Any] = EXPECTED) -> None:
    """Equal to EXPECTED: counts and names exactly, floats to 1e-9, percentiles within one rank."""
    latency, expected_latency = actual["reply_latency"], expected["reply_latency"]
    assert latency["replies"] == expected_latency["replies"]
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert expected_latency[key] <= latency[key] <= expected_latency[key] + LATENCY_TOLERANCE_MS, (key, latency)
    rest = {k: v for k, v in actual.items() if k != "reply_latency"}
    expected_rest = {k: v for k, v in expected.items() if k != "reply_latency"}
    assert _close(rest, expected_rest), f"report differs:\n{rest}\nexpected:\n{expected_rest}"


def _close(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(_close(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(_close, actual, expected))
    if isinstance(expected, float) and not isinstance(actual, bool) and isinstance(actual, int | float):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
    return actual == expected and type(actual) is type(expected)


def assert_human_matches(actual: dict[str, Any], expected: dict[str, Any] = EXPECTED_HUMAN) -> None:
    """The feedback figures equal EXPECTED_HUMAN: counts and names exactly, floats to 1e-9."""
    assert _close(actual, expected), f"feedback figures differ:\n{actual}\nexpected:\n{expected}"


def knowledge_gap_events() -> list[ConversationEvent]:
    """Hand-overs whose content-gap report is known by hand (KNOWN_GAPS), in the window, with noise it must
    ignore: another reason's hand-over, a follow-up, an answered turn, and a gap just outside the window.

    "do you sell lawn mowers" four times in three conversations (one retried batch's duplicate insert is
    the caller's to add), in three wordings; "can i pay with <PHONE_NUMBER> credit" twice; one of a kind.
    """

    def gap(
        event_id: str, conversation: str, text: str, hours: float, intent: str = "out_of_scope"
    ) -> ConversationEvent:
        event = _event(
            event_id,
            "escalated",
            SINCE + timedelta(hours=hours),
            conversation,
            intent,
            40.0,
            0.0,
            ("neutral", 0.0),
            EventAction(type="escalation", name="knowledge_gap", status="queued"),
        )
        assert event.message is not None
        return event.model_copy(update={"message": event.message.model_copy(update={"content": text})})

    events = [
        gap("g1", "k1", "Do you sell lawn mowers?", 1),
        gap("g2", "k2", "do you sell  lawn mowers", 2),
        gap("g3", "k2", "DO YOU SELL LAWN MOWERS!!", 3, intent="product_info"),
        gap("g4", "k3", "Do you sell lawn mowers?", 4),
        gap("g5", "k4", "Can I pay with <PHONE_NUMBER> credit?", 5, intent="payment_methods"),
        gap("g6", "k5", "can I pay with <PHONE_NUMBER> credit", 6, intent="payment_methods"),
        gap("g7", "k6", "Is the café [downtown] open on Sundays?", 7),
        gap("late", "k7", "do you sell lawn mowers", 24),  # at UNTIL: outside the window
    ]
    other = gap("o1", "k8", "I want to talk to a person", 8)
    events.append(
        other.model_copy(
            update={"action": EventAction(type="escalation", name="customer_requested_human", status="queued")}
        )
    )
    follow = gap("f1", "k1", "do you sell lawn mowers", 9)
    events.append(
        follow.model_copy(update={"action": EventAction(type="escalation", name="with_human", status="follow_up")})
    )
    answered = _event("a1", "turn_processed", SINCE + timedelta(hours=10), "k9", "faq", 30.0, 0.001, ("neutral", 0.0))
    events.append(
        answered.model_copy(update={"message": EventMessage(id="m-a1", content="do you sell lawn mowers", type="text")})
    )
    return events


KNOWN_GAPS = [
    {
        "domain": "",  # these hand-overs carry no knowledge part (as before the knowledge columns)
        "question": "do you sell lawn mowers",
        "handovers": 4,
        "conversations": 3,
        "wordings": 1,
        "intent": "out_of_scope",
        "examples": ["DO YOU SELL LAWN MOWERS!!", "Do you sell lawn mowers?"],  # of three wordings: the first two
        "last_seen": "2025-03-01T04:00:00Z",
    },
    {
        "domain": "",
        "question": "can i pay with phone number credit",
        "handovers": 2,
        "conversations": 2,
        "wordings": 1,
        "intent": "payment_methods",
        "examples": ["Can I pay with <PHONE_NUMBER> credit?", "can I pay with <PHONE_NUMBER> credit"],
        "last_seen": "2025-03-01T06:00:00Z",
    },
    {
        "domain": "",
        "question": "is the café downtown open on sundays",
        "handovers": 1,
        "conversations": 1,
        "wordings": 1,
        "intent": "out_of_scope",
        "examples": ["Is the café [downtown] open on Sundays?"],
        "last_seen": "2025-03-01T07:00:00Z",
    },
]


def content_gap_events() -> list[ConversationEvent]:
    """Turns that searched the knowledge base, whose content-gap report is known by hand (KNOWN_CONTENT_GAPS).

    Domain `shop`: "Do you sell lawn mowers?" and its rewording "Can I buy a lawn mower from you?" handed over
    (one gap, count 2, by meaning and by shared words alike), "Is the café open on Sundays?" handed over once;
    "How long do refunds take?" answered from returns.md at 0.55 against a 0.50 threshold (low confidence),
    "Where do I send a return?" answered from it at 0.90 (confident: not a weak answer); a side question
    whose template was kept. Domain `billing`: "Can I pay with <PHONE_NUMBER> credit?" handed over.
    """

    def turn(
        event_id: str,
        event_type: str,
        conversation: str,
        text: str,
        hours: float,
        knowledge: EventKnowledge,
        intent: str = "out_of_scope",
    ) -> ConversationEvent:
        reason = EventAction(type="escalation", name="knowledge_gap", status="queued")
        event = _event(
            event_id,
            event_type,
            SINCE + timedelta(hours=hours),
            conversation,
            intent,
            40.0,
            0.0,
            ("neutral", 0.0),
            reason if event_type == "escalated" else None,
        )
        assert event.message is not None
        message = event.message.model_copy(update={"content": text})
        return event.model_copy(update={"message": message, "knowledge": knowledge})

    def gap(domain: str, found: list[str]) -> EventKnowledge:
        return EventKnowledge(confidence=0.2, threshold=0.5, answered=False, found=found, domain=domain)

    def answered(confidence: float) -> EventKnowledge:
        return EventKnowledge(
            confidence=confidence, threshold=0.5, answered=True, cited=[RETURNS], found=[RETURNS], domain="shop"
        )

    return [
        turn("q1", "escalated", "n1", "Do you sell lawn mowers?", 1, gap("shop", ["garden.md"])),
        turn("q2", "escalated", "n2", "Can I buy a lawn mower from you?", 2, gap("shop", ["garden.md"])),
        turn("q3", "escalated", "n3", "Is the café open on Sundays?", 3, gap("shop", ["stores.md"])),
        turn("q4", "escalated", "n4", "Can I pay with <PHONE_NUMBER> credit?", 4, gap("billing", [])),
        turn("q5", "turn_processed", "n5", "How long do refunds take?", 5, answered(0.55), "faq"),
        turn("q6", "turn_processed", "n6", "Where do I send a return?", 6, answered(0.90), "faq"),
        turn("q7", "turn_processed", "n7", "and is there a fee?", 7, gap("shop", ["fees.md"]), "track_order"),
    ]


RETURNS = "returns.md"
KNOWN_CONTENT_GAPS = {
    "by_domain": [
        {
            "domain": "shop",
            "searched": 6,
            "answered": 2,
            "low_confidence": 1,
            "handed_over": 3,
            "template_kept": 1,
            "mean_confidence": (0.2 * 4 + 0.55 + 0.9) / 6,
        },
        {
            "domain": "billing",
            "searched": 1,
            "answered": 0,
            "low_confidence": 0,
            "handed_over": 1,
            "template_kept": 0,
            "mean_confidence": 0.2,
        },
    ],
    "articles": [
        {
            "article": RETURNS,
            "domain": "shop",
            "answers": 2,
            "conversations": 2,
            "low_confidence": 1,
            "mean_confidence": 0.725,
        }
    ],
    "low_confidence": [
        {
            "domain": "shop",
            "question": "how long do refunds take",
            "answers": 1,
            "conversations": 1,
            "wordings": 1,
            "intent": "faq",
            "article": RETURNS,
            "mean_confidence": 0.55,
            "mean_threshold": 0.5,
            "examples": ["How long do refunds take?"],
            "last_seen": "2025-03-01T05:00:00Z",
        }
    ],
}
KNOWN_CONTENT_GAP_GROUPS = [
    {
        "domain": "shop",
        "question": "can i buy a lawn mower from you",  # one hand-over each: the first in text order leads
        "handovers": 2,
        "conversations": 2,
        "wordings": 2,
        "intent": "out_of_scope",
        "examples": ["Can I buy a lawn mower from you?", "Do you sell lawn mowers?"],
        "last_seen": "2025-03-01T02:00:00Z",
    },
    {
        "domain": "billing",
        "question": "can i pay with phone number credit",
        "handovers": 1,
        "conversations": 1,
        "wordings": 1,
        "intent": "out_of_scope",
        "examples": ["Can I pay with <PHONE_NUMBER> credit?"],
        "last_seen": "2025-03-01T04:00:00Z",
    },
    {
        "domain": "shop",
        "question": "is the café open on sundays",
        "handovers": 1,
        "conversations": 1,
        "wordings": 1,
        "intent": "out_of_scope",
        "examples": ["Is the café open on Sundays?"],
        "last_seen": "2025-03-01T03:00:00Z",
    },
]
