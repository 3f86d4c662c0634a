"""guard: the last check before a reply leaves; when unsure, hand the turn to a human.

First version, deliberately simple: it blocks empty replies, unfilled template placeholders,
replies that claim an action which did not succeed, and obvious prompt-injection phrasing in
the customer's message. The agent issue adds action allow-lists, amount limits and PII rules.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import ExecutedTurn, GuardedTurn, GuardVerdict

PLACEHOLDER = re.compile(r"\{\{?\s*[A-Za-z_][\w ]*\}\}?")
DEFAULT_INJECTION_PATTERNS = [
    r"ignore (all |any |the )?(previous|prior|above) (instructions|rules)",
    r"disregard (your|the) (policy|policies|instructions|rules)",
    r"^\s*(system|assistant)\s*:",
    r"you are now (a|an|in) ",
    r"<\s*/?\s*(tool_call|function_call|system)\b",
]


class GuardConfig(OperatorConfig):
    injection_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_INJECTION_PATTERNS))


class Guard(Operator[ExecutedTurn, GuardedTurn]):
    """Pass the reply, or block it (the turn then escalates) with the reason."""

    name = "guard"
    input_type = ExecutedTurn
    output_type = GuardedTurn
    branches = ("pass", "block")
    Config: ClassVar[type[OperatorConfig]] = GuardConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        cfg: GuardConfig = self.config  # type: ignore[assignment]
        self._injection = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in cfg.injection_patterns]

    def choose_branch(self, output: GuardedTurn) -> str:
        return output.guard.branch

    async def run(self, record: ExecutedTurn, ctx: OperatorContext) -> GuardedTurn:
        return GuardedTurn(**dict(record), guard=self.verdict(record))

    def verdict(self, turn: ExecutedTurn) -> GuardVerdict:
        reply = turn.reply.text.strip()
        if not reply:
            return GuardVerdict(branch="block", reason="empty reply")
        if PLACEHOLDER.search(reply):
            return GuardVerdict(branch="block", reason="reply has an unfilled placeholder")
        failed = [r.name for r in turn.results if r.status != "succeeded"]
        if failed and turn.plan.steps and not turn.reply.text.startswith("Sorry"):
            return GuardVerdict(branch="block", reason=f"actions did not succeed: {', '.join(failed)}")
        for pattern in self._injection:
            if pattern.search(turn.message.text):
                return GuardVerdict(branch="block", reason="possible prompt injection in the message")
        return GuardVerdict(branch="pass")
