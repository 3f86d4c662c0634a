"""authorize: check a plan's actions against policy before any of them runs.

This is the guard in front of the backend: whatever proposed the plan (a playbook today, a
language model later), a step runs only if the action policy (`operators/data/action_policy.yaml`)
allows that tool for the turn's intent, a write comes after identity verification, and amounts
stay within the limits. The write steps still waiting for the customer's yes are checked too, so a
refund above the limit goes to a human before the customer is asked to confirm it. A refused plan
takes the `block` branch (to `escalate`); a plan that needs a human's approval is blocked with
reason `needs_approval`, and the escalation carries the prepared actions for one-click approval.
Fails closed: a policy it cannot evaluate blocks.
"""

from __future__ import annotations

import logging
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
        return AuthorizedTurn(**dict(record), authorization=self.verdict(record))

    def verdict(self, record: PlannedTurn) -> GuardVerdict:
        from operators.policy import check_actions

        plan = record.plan
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
