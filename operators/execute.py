"""execute: run the plan's actions through the backend tools and turn the outcome into the reply.

Steps run in order; the first that fails stops the rest, and the reply is the plan's template for
that outcome (`not_found`, `not_allowed`, `invalid`, `unverified`, `failed`), never the success
text. Each call has a timeout; a backend that is unavailable is retried with backoff. A write
carries the plan's idempotency key, derived from message ids, so a turn replayed after a crash
repeats the same key and the backend acts once. Identity verification, when the plan asks for it,
marks the session verified; a failed one counts against the task. Every call carries the
message's channel address as its `source` (`ToolCall.source`), set here from the message, not by
the plan, so no planner can leave it out or name another. A backend that has locked identity
checks (too many failures for the customer or the source, `connectors/backends/commerce/crm.py:
VerifyIdentity`) makes the outcome `identity_locked`: the customer is told account actions are
paused and how to get help, and the session remembers until when, so `authorize` hands a further
account action to a human.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from connectors.protocols import ToolCall, ToolError
from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext, ToolSource
from schemas import (
    VERIFY_TOOL,
    ActionCall,
    ActionResult,
    AuthorizedTurn,
    ExecutedTurn,
    Message,
    Reply,
    SessionContext,
)

OPTIONAL_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class ExecuteConfig(OperatorConfig):
    timeout_s: float = Field(default=5.0, gt=0, description="longest one tool call may take")
    retries: int = Field(default=2, ge=0, le=5, description="retries of a call the backend could not serve")
    retry_backoff_s: float = Field(default=0.2, ge=0)
    max_verify_attempts: int = Field(default=2, ge=1)


class Execute(Operator[AuthorizedTurn, ExecutedTurn]):
    """Call each step's tool for this customer; render the reply for the outcome."""

    name = "execute"
    input_type = AuthorizedTurn
    output_type = ExecutedTurn
    Config: ClassVar[type[OperatorConfig]] = ExecuteConfig

    async def run(self, record: AuthorizedTurn, ctx: OperatorContext) -> ExecutedTurn:
        session = record.session.model_copy(deep=True)
        variables: dict[str, Any] = dict(record.plan.reply_variables)
        if record.profile is not None and record.profile.display_name:
            variables.setdefault("customer_name", record.profile.display_name)
        results: list[ActionResult] = []
        outcome = "succeeded"
        cfg: ExecuteConfig = self.config  # type: ignore[assignment]
        for step in record.plan.steps:
            result = await call_action(step, record.message.customer_id, ctx.tools, cfg, source_of(record.message))
            results.append(result)
            if result.status != "succeeded":
                outcome = "failed" if result.error_kind in (None, "unavailable") else result.error_kind
                variables["error"] = result.error or ""
                if outcome == "identity_locked":
                    session.identity_locked_until = _locked_until(result)
                    if session.identity_locked_until is not None:
                        variables["locked_until"] = f"{session.identity_locked_until:%d %B %Y, %H:%M} UTC"
                break
            if step.name == VERIFY_TOOL:
                session.verified = True
                session.identity_locked_until = None  # the backend let the check through: no lock holds
            if step.save_as:
                variables.update(flatten(result.result, step.save_as))
        self._update_task(session, record, outcome)
        template = record.plan.reply_template if outcome == "succeeded" else record.plan.replies.get(outcome, "")
        text = render(template or FALLBACK_REPLIES.get(outcome, FALLBACK_REPLIES["failed"]), variables)
        confidence = record.nlu.confidence if outcome == "succeeded" else 0.0
        reply = Reply(text=text, confidence=min(1.0, max(0.0, confidence)))
        fallback = record.plan.fallback_template
        if outcome == "succeeded" and fallback is not None:
            # a language model wrote the template (`llm_plan`): `guard` checks it against what the tools said
            # and sends the non-generated reply instead when it states anything they did not
            reply = reply.model_copy(
                update={"fallback_text": render(fallback, variables), "sources": generated_sources(record, results)}
            )
        return ExecutedTurn(**{**dict(record), "session": session}, results=results, reply=reply)

    def _update_task(self, session: SessionContext, record: AuthorizedTurn, outcome: str) -> None:
        """What the task waits for next; turns without progress count towards a hand-over (`route`)."""
        cfg: ExecuteConfig = self.config  # type: ignore[assignment]
        task = session.task
        if outcome == "identity_locked":
            # not a turn without progress: the lock is the answer, and retrying the question cannot help
            session.task = None
        elif outcome == "unverified" and task is not None:
            task.verify_attempts += 1
            task.awaiting, task.awaiting_slot = "verification", None
            session.failed_turns += 1
            if task.verify_attempts >= cfg.max_verify_attempts:
                session.task = None
        elif outcome != "succeeded":
            session.task = None
            session.failed_turns += 1
        elif task is not None and task.asked_turns > 2:
            session.failed_turns += 1  # asked for the same thing again and again
        else:
            session.failed_turns = 0


async def call_action(
    step: ActionCall, customer_id: str, tools: ToolSource | None, cfg: ExecuteConfig, source: str | None = None
) -> ActionResult:
    """Run one step through the tool registry: timeout per call, retries while the backend is unavailable.

    A verification whose details do not match counts as failed (`unverified`); one the backend
    refused because of too many failures is `identity_locked`. Shared by `execute` and the
    workspace's approval of prepared actions, so both act the same way with the same keys.
    """
    result = await _call_once(step, customer_id, tools, cfg, source)
    if step.name == VERIFY_TOOL and result.status == "succeeded" and not result.result.get("verified"):
        if result.result.get("locked"):
            return result.model_copy(update={"status": "failed", "error_kind": "identity_locked",
                                             "error": "too many failed identity checks"})  # fmt: skip
        result = result.model_copy(update={"status": "failed", "error_kind": "unverified",
                                           "error": "the details do not match the account"})  # fmt: skip
    return result


def generated_sources(record: AuthorizedTurn, results: list[ActionResult]) -> list[str]:
    """What a generated reply may state: the tool results of the turn and the passages its plan cites."""
    sources: list[str] = []
    knowledge = record.plan.knowledge
    if knowledge is not None and knowledge.answered:
        sources += [f"{p.title}\n{p.text}" for p in knowledge.passages if p.doc_id in knowledge.cited]
    sources += [
        json.dumps({"tool": r.name, "status": r.status, "result": r.result}, ensure_ascii=False, default=str)
        for r in results
        if r.status == "succeeded"
    ]
    return sources


def source_of(message: Message) -> str:
    """The channel address a message came from, which the backend counts failed identity checks of."""
    return f"{message.channel}:{message.sender}"


def _locked_until(result: ActionResult) -> datetime | None:
    try:
        until = datetime.fromisoformat(str(result.result["locked_until"]))
    except (KeyError, ValueError):
        return None  # locked all the same: the backend refuses the next check too, and says so again
    # a tenant backend's naive time is taken as UTC, so `authorize` can compare it with the clock
    return until if until.tzinfo is not None else until.replace(tzinfo=UTC)


async def _call_once(
    step: ActionCall, customer_id: str, tools: ToolSource | None, cfg: ExecuteConfig, source: str | None
) -> ActionResult:
    tool = await tools.get(step.name) if tools is not None else None
    if tool is None:
        return _failed(step, "unavailable", f"no connector offers {step.name}")
    call = ToolCall(step.name, dict(step.arguments), customer_id, step.idempotency_key, source)
    for attempt in range(cfg.retries + 1):
        try:
            result = await asyncio.wait_for(tool.call(call), cfg.timeout_s)
            return ActionResult(name=step.name, idempotency_key=step.idempotency_key, status="succeeded",
                                result=result)  # fmt: skip
        except ToolError as exc:
            if exc.kind != "unavailable" or attempt == cfg.retries:
                return _failed(step, exc.kind, exc.message)
        except TimeoutError:
            if attempt == cfg.retries:
                return _failed(step, "unavailable", f"{step.name} timed out after {cfg.timeout_s:g}s")
        await asyncio.sleep(cfg.retry_backoff_s * 2**attempt)
    return _failed(step, "unavailable", "retries exhausted")


FALLBACK_REPLIES = {
    "failed": "Sorry, something went wrong on our side, so nothing was changed. A colleague will follow up.",
    "unverified": "I couldn't verify your identity with those details, so I can't go ahead.",
    "identity_locked": (
        "For your security I've paused account actions (orders, refunds, account changes) after several identity "
        "checks that didn't match[, until {locked_until}]. Even the right details won't work until then. I can "
        "still answer general questions. If you need help with your account sooner, ask for a person and a "
        "colleague will take over, or contact our customer service team (details on our Contact us page)."
    ),
    "not_found": "I couldn't find that on your account.",
    "not_allowed": "I'm sorry, I can't do that: {error}",
    "invalid": "Something in that request doesn't look right: {error}",
    "needs_approval": "I can't do that on my own: {error} Nothing was changed; a colleague can help if you ask.",
}


def _failed(step: ActionCall, kind: str, message: str) -> ActionResult:
    return ActionResult(
        name=step.name, idempotency_key=step.idempotency_key, status="failed", error=message, error_kind=kind
    )  # type: ignore[arg-type]


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """{"status": "shipped", "shipment": {"carrier": "DHL"}} under "order" → order.status, order.shipment.carrier."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}"))
        return out
    return {prefix: value}


class _Fields(string.Formatter):
    """str.format over a flat dict whose keys contain dots; a missing or empty field raises KeyError."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        value = kwargs.get(field_name)
        if value is None or value == "":
            raise KeyError(field_name)
        return value, field_name


def render(template: str, variables: dict[str, Any]) -> str:
    """Fill `{name}` fields; drop an `[optional segment]` whose fields are missing."""
    formatter = _Fields()

    def segment(match: re.Match[str]) -> str:
        try:
            return formatter.vformat(match.group(1), (), variables)
        except (KeyError, IndexError, ValueError):
            return ""

    text = OPTIONAL_SEGMENT.sub(segment, template)
    try:
        return formatter.vformat(text, (), variables)
    except (KeyError, IndexError, ValueError):
        return text  # a required field is missing: the placeholder stays, and `guard` hands the turn over
