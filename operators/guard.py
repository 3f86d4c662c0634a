"""guard: the last check before a reply leaves; when unsure, hand the turn to a human.

Blocks (and so escalates): an empty reply, an unfilled template placeholder, a turn whose action
failed on the backend's side (a human follows up; the customer is never told it worked), a reply
carrying an email, phone, card or IBAN the customer did not give this session, that is not their own
and that the help-center article the reply quotes does not publish (`operators/policy/__init__.py:
check_reply_pii`), and a message the input screening flags (prompt injection, tool-call look-alikes,
abuse) in case `route` was configured not to screen.
Actions themselves were checked against policy by `authorize` before they ran.

A reply a language model generated (`compose`'s rewrite, or the LLM planner's reply, which `execute` marks by
keeping the template turn's reply as its fallback) is checked first on its own: every number, link and action it
states must come from its sources (`operators/policy/grounding.py`), and the checks above apply to it. When it
fails, the non-LLM reply it replaced (`Reply.fallback_text`) takes its place and is checked as any reply is:
the customer gets the template's answer, never an ungrounded one, and the verdict says what was rejected
(`kind="llm_reply_rejected"`; `supportflow_llm_replies_total` counts both outcomes).
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar

from prometheus_client import Counter

from operators.base import Operator, OperatorConfig
from operators.policy import check_grounding, check_reply_pii, screen_input
from operators.protocols import OperatorContext
from schemas import ActionResult, ExecutedTurn, GuardedTurn, GuardVerdict, Reply

log = logging.getLogger(__name__)
LLM_REPLIES = Counter(
    "supportflow_llm_replies_total",
    "Generated replies at guard, by outcome (sent; rejected: the non-LLM reply went instead).",
    ["outcome"],
)

PLACEHOLDER = re.compile(r"\{\{?\s*[A-Za-z_][\w .]*\}\}?")


class GuardConfig(OperatorConfig):
    check_reply_pii: bool = True


class Guard(Operator[ExecutedTurn, GuardedTurn]):
    """Pass the reply, or block it (the turn then escalates) with the reason."""

    name = "guard"
    input_type = ExecutedTurn
    output_type = GuardedTurn
    branches = ("pass", "block")
    Config: ClassVar[type[OperatorConfig]] = GuardConfig

    def choose_branch(self, output: GuardedTurn) -> str:
        return output.guard.branch

    async def run(self, record: ExecutedTurn, ctx: OperatorContext) -> GuardedTurn:
        reply = record.reply
        if reply.fallback_text is None:
            return GuardedTurn(**dict(record), guard=self.verdict(record))
        problem = self.generated_problem(record)
        if problem is None:
            LLM_REPLIES.labels("sent").inc()
            return GuardedTurn(**dict(record), guard=GuardVerdict(branch="pass"))
        LLM_REPLIES.labels("rejected").inc()
        log.info("guard: generated reply for %s rejected (%s); the non-LLM reply goes", record.message.message_id,
                 problem)  # fmt: skip
        # the model's cost stays on the turn: it was spent, whatever was sent
        fallback = Reply(text=reply.fallback_text, confidence=reply.confidence, llm=reply.llm)
        turn = record.model_copy(update={"reply": fallback})
        verdict = self.verdict(turn)
        if verdict.branch == "pass":
            verdict = GuardVerdict(
                branch="pass", reason=f"generated reply rejected: {problem}", kind="llm_reply_rejected"
            )
        return GuardedTurn(**dict(turn), guard=verdict)

    def generated_problem(self, turn: ExecutedTurn) -> str | None:
        """Why a generated reply may not leave: ungrounded, or failing the checks any reply must pass."""
        verdict = self.verdict(turn, extra_sources=turn.reply.sources)
        if verdict.branch == "block":
            return verdict.reason
        said = [h.text for h in turn.session.history if h.role == "customer"] + [turn.message.text]
        performed = [r.name for r in turn.results if r.status == "succeeded"]
        finding = check_grounding(turn.reply.text, [*turn.reply.sources, *said], performed)
        return finding.reason if finding is not None else None

    def verdict(self, turn: ExecutedTurn, extra_sources: list[str] | None = None) -> GuardVerdict:
        cfg: GuardConfig = self.config  # type: ignore[assignment]
        said = [h.text for h in turn.session.history if h.role == "customer"] + [turn.message.text]
        # an answer quoting the tenant's own article may repeat the contact details published there
        # (support's phone number, its email address); card numbers stay blocked whatever the source
        said += quoted_passages(turn)
        said += extra_sources or []
        problem = reply_problem(turn.reply.text, turn.results, turn.message.text, said, _profile_values(turn),
                                check_pii=cfg.check_reply_pii)  # fmt: skip
        return GuardVerdict(branch="block", reason=problem) if problem else GuardVerdict(branch="pass")


def reply_problem(
    reply: str,
    results: list[ActionResult],
    message_text: str,
    customer_texts: list[str],
    own_values: list[str],
    check_pii: bool = True,
) -> str | None:
    """Why this reply may not leave, or None. Shared by `guard` and the workspace's approval outcome."""
    reply = reply.strip()
    if not reply:
        return "empty reply"
    if PLACEHOLDER.search(reply):
        return "reply has an unfilled placeholder"
    broken = [r.name for r in results if r.status == "failed" and r.error_kind in (None, "unavailable")]
    if broken:
        return f"action failed on the backend: {', '.join(broken)}"
    finding = screen_input(message_text)
    if finding is not None:
        return f"{finding.kind}: {finding.reason}"
    if check_pii:
        pii = check_reply_pii(reply, customer_texts, own_values)
        if pii is not None:
            return f"reply PII: {pii.reason}"
    return None


def quoted_passages(turn: ExecutedTurn) -> list[str]:
    """The text of the knowledge passages the reply quotes (`answer`'s cited articles), if it quotes any."""
    knowledge = turn.plan.knowledge
    if knowledge is None or not knowledge.answered:
        return []
    return [p.text for p in knowledge.passages if p.doc_id in knowledge.cited]


def _profile_values(turn: ExecutedTurn) -> list[str]:
    """The customer's own contact details, which a reply may repeat back to them."""
    profile = turn.profile
    if profile is None:
        return []
    return [contact.address for contact in profile.contacts]
