"""authorize: check a plan's actions against policy before any of them runs.

This is the guard in front of the backend: whatever proposed the plan (a playbook today, a
language model later), a step runs only if the action policy (`operators/data/action_policy.yaml`)
allows that tool for the turn's intent, a write comes after identity verification, and amounts
stay within the limits. The write steps still waiting for the customer's yes are checked too, so a
refund above the limit goes to a human before the customer is asked to confirm it. A refused plan
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

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from operators.base import Operator, OperatorConfig
from operators.policy import DEFAULT_ACTION_POLICY, ActionPolicy
from operators.protocols import OperatorContext
from schemas import VERIFY_TOOL, AuthorizedTurn, GuardVerdict, PlannedTurn

log = logging.getLogger(__name__)

DEFAULT_POLICY = DEFAULT_ACTION_POLICY


class AuthorizeConfig(OperatorConfig):
    policy_file: Path = DEFAULT_POLICY


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
        return AuthorizedTurn(**dict(record), authorization=self.verdict(record, ctx.clock.now()))

    def verdict(self, record: PlannedTurn, now: datetime | None = None) -> GuardVerdict:
        """`now` (default: when the message arrived) decides whether a recorded identity lock still holds."""
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
            finding = check_actions(plan.intent, plan.steps, self._policy, verified=record.session.verified)
            if finding is None and plan.pending_steps:
                verified_then = record.session.verified or verifying
                finding = check_actions(plan.intent, plan.pending_steps, self._policy, verified=verified_then)
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
