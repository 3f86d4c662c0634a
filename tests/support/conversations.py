"""Scripted traffic for the end-to-end tests: many customers, several channels, mixed intents."""

from __future__ import annotations

from typing import Any

from tests.support.stream import raw_message

UTTERANCES = [
    "where is my order 1234567?",
    "I want to cancel order 7654321",
    "how can I get a refund?",
    "I need to change my shipping address",
    "what payment methods do you accept?",
    "can I talk to a human please",
    "I forgot my password",
    "how long does delivery take?",
    "I want to subscribe to the newsletter",
    "asdf qwerty zxcv",
]
CHANNELS = ["webchat", "sms", "email"]


def sender_for(conversation: int, channel: str) -> str:
    if channel == "sms":
        return f"+1555{conversation:07d}"
    if channel == "email":
        return f"customer{conversation}@example.com"
    return f"web-session-{conversation}"


def conversation_traffic(conversations: int, per_conversation: int, prefix: str = "m") -> list[dict[str, Any]]:
    """Messages interleaved across conversations, the way real traffic arrives."""
    messages = []
    for turn in range(per_conversation):
        for conversation in range(conversations):
            channel = CHANNELS[conversation % len(CHANNELS)]
            text = UTTERANCES[(conversation + turn) % len(UTTERANCES)]
            messages.append(
                raw_message(
                    f"{prefix}-{conversation}-{turn}",
                    channel,
                    sender_for(conversation, channel),
                    f"{text} (turn {turn})",
                )
            )
    return messages


ALICE = "C000001"
"""The demo shop's first customer (connectors/backends/commerce/seed.py)."""
