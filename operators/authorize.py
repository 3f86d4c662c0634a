"""authorize: check a plan's actions against policy before any of them runs.

This is the guard in front of the backend: whatever proposed the plan (a playbook today, a
language model later), a step runs only if the action policy (`operators/data/action_policy.yaml`)
allows that tool for the turn's intent, a write comes after identity verification, and amounts
stay within the limits. A refund is judged on what the backend says it comes to (the refund-quote
read tool: the named items' worth, and what the order and the customer were already refunded
automatically), so many small refunds reach the limit like one large one. The write steps still
waiting for the customer's yes are checked too, so a refund above the limit goes to a human before
the customer is asked to confirm it. A refused plan
takes the `block` branch (to `escalate`); a plan that needs a human's approval is blocked with
reason `needs_approval`, and the escalation carries the prepared actions for one-click approval.
Fails closed: a policy it cannot evaluate blocks.

An account action (a plan that asks for or runs the identity check) for a customer whose checks
the backend has locked (`session.identity_locked_until`, recorded by `execute` from the backend's
answer) is blocked with kind `identity_locked`: the escalation says so, and a human, not the
customer's next guess, decides. The backend still refuses the check itself while locked, so a
session that does not know of the lock (another customer's guesses locked the source) is safe too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from connectors.protocols import ToolCall, ToolError
from operators.base import Operator, OperatorConfig
from operators.policy import DEFAULT_ACTION_POLICY, ActionPolicy, RefundSummary
from operators.protocols import OperatorContext
from schemas import VERIFY_TOOL, AuthorizedTurn, GuardVerdict, PlannedTurn

log = logging.getLogger(__name__)

DEFAULT_POLICY = DEFAULT_ACTION_POLICY


class AuthorizeConfig(OperatorConfig):
    policy_file: Path = DEFAULT_POLICY
    quote_timeout_s: float = Field(default=5.0, gt=0, description="longest the refund quote may take")


class Authorize(Operator[PlannedTurn, AuthorizedTurn]):
    """Pass the plan to `execute`, or block it (→ `escalate`) with the policy's reason."""

    name = "authorize"
    input_type = PlannedTurn
    output_type = AuthorizedTurn
    branches = ("pass", "block")
    Config: ClassVar[type[OperatorConfig]] = AuthorizeConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._policy: Any = None

    def warm_up(self, ctx: OperatorContext) -> None:
        from operators.policy import load_action_policy

        cfg: AuthorizeConfig = self.config  # type: ignore[assignment]
        self._policy = load_action_policy(cfg.policy_file)

    @property
    def policy(self) -> ActionPolicy:
        """The action policy this operator enforces (loaded in `warm_up`)."""
        if self._policy is None:
            raise RuntimeError("authorize: warm_up has not loaded the policy yet")
        return self._policy

    def choose_branch(self, output: AuthorizedTurn) -> str:
        return output.authorization.branch

    async def run(self, record: PlannedTurn, ctx: OperatorContext) -> AuthorizedTurn:
        if self._policy is None:
            self.warm_up(ctx)
        refunds = await self.refund_summaries(record, ctx)
        return AuthorizedTurn(**dict(record), authorization=self.verdict(record, refunds, ctx.clock.now()))

    async def refund_summaries(self, record: PlannedTurn, ctx: OperatorContext) -> dict[str, RefundSummary]:
        """The backend's word on each refund step, by idempotency key; a step it cannot judge is left out.

        Left out means `check_actions` sends the refund to a human: a quote that fails never lets one through.
        """
        policy = self.policy
        steps = [s for s in [*record.plan.steps, *record.plan.pending_steps] if s.name in policy.refund_tools]
        tool = await ctx.tools.get(policy.refund_quote_tool) if steps and ctx.tools is not None else None
        if tool is None:
            return {}
        cfg: AuthorizeConfig = self.config  # type: ignore[assignment]
        summaries: dict[str, RefundSummary] = {}
        for step in steps:
            arguments = {k: step.arguments[k] for k in ("order_number", "items") if k in step.arguments}
            call = ToolCall(policy.refund_quote_tool, arguments, record.message.customer_id, "")
            try:
                quote = await asyncio.wait_for(tool.call(call), cfg.quote_timeout_s)
                summaries[step.idempotency_key] = RefundSummary.from_quote(quote)
            except ToolError as exc:
                if exc.kind in ("not_found", "not_allowed", "invalid"):
                    summaries[step.idempotency_key] = RefundSummary(refusal=exc.message)
            except Exception:  # unavailable, timed out, a malformed quote: the step goes to a human
                log.warning("refund quote failed on %s", record.message.message_id, exc_info=True)
        return summaries

    def verdict(
        self, record: PlannedTurn, refunds: dict[str, RefundSummary] | None = None, now: datetime | None = None
    ) -> GuardVerdict:
        """`refunds`: the backend's quotes by step; `now` (default: when the message arrived) decides
        whether a recorded identity lock still holds."""
        from operators.policy import check_actions

        plan = record.plan
        locked = identity_locked(record, now or record.message.received_at)
        if locked is not None:
            return locked
        if not plan.steps and not plan.pending_steps:
            return GuardVerdict(branch="pass")
        # Steps running now need a session verified in an earlier turn; pending writes run on a later
        # turn, after this turn's verification step (if any) has succeeded.
        verifying = any(step.name == VERIFY_TOOL for step in plan.steps)
        try:
            finding = check_actions(plan.intent, plan.steps, self._policy, record.session.verified, refunds,
                                    planner=plan.planner)  # fmt: skip
            if finding is None and plan.pending_steps:
                verified_then = record.session.verified or verifying
                finding = check_actions(plan.intent, plan.pending_steps, self._policy, verified_then, refunds,
                                        planner=plan.planner)  # fmt: skip
        except Exception as exc:  # fail closed: a policy that cannot be evaluated allows nothing
            log.exception("action policy failed on %s", record.message.message_id)
            return GuardVerdict(branch="block", reason=f"policy error: {type(exc).__name__}")
        if finding is None:
            return GuardVerdict(branch="pass")
        return GuardVerdict(branch="block", reason=f"{finding.kind}: {finding.reason}", kind=finding.kind)


def identity_locked(record: PlannedTurn, now: datetime) -> GuardVerdict | None:
    """The block for an account action while the backend's identity lock holds, or None."""
    session, plan = record.session, record.plan
    until = session.identity_locked_until
    if session.verified or until is None or now >= until:
        return None  # a customer who proved who they are before the lock keeps their session
    if plan.awaiting != "verification" and not any(step.name == VERIFY_TOOL for step in plan.steps):
        return None  # general questions are still answered
    reason = f"identity checks locked after too many failures, until {until:%Y-%m-%d %H:%M} UTC"
    return GuardVerdict(branch="block", reason=reason, kind="identity_locked")
