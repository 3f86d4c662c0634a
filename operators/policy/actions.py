"""The action policy: which tools a plan may call, which need a verified customer, which a human's approval.

`check_actions` holds a plan's steps against an `ActionPolicy` (per-intent tool allow-list, write tools need a
verified customer, amounts must be sane, and refunds need a human's approval once the agent's automatic refunds
would pass the per-currency limit). It is deterministic code, never a model: whatever proposed the plan (a
playbook, later an LLM), this decides.

A refund is judged cumulatively, on what the backend says (`RefundSummary`, from the refund-quote read tool):
what the named items come to, plus what was already refunded automatically on the order and on the customer's
account in the backend's rolling window. Splitting a large refund into small steps or small tasks therefore
reaches the limit like one large refund. Without a summary a refund step needs a human (fail closed); the
backend (`payments.refund`) applies the same limits again as the authority.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.agent import ActionCall

__all__ = ["APPROVAL_ARGUMENT", "DEFAULT_ACTION_POLICY", "ActionFinding", "ActionPolicy", "ActionPolicyError",
           "RefundSummary", "check_actions", "load_action_policy"]  # fmt: skip

# the refund argument naming the human who approved it; only the workspace's approval may set it
APPROVAL_ARGUMENT = "approved_by"

DEFAULT_ACTION_POLICY = Path(__file__).resolve().parents[1] / "data" / "action_policy.yaml"


class ActionFinding(BaseModel):
    """Why a plan's steps may not run as planned; `step` is the offending call (the prepared action to escalate)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["not_allowed", "needs_approval", "unverified_write", "invalid_amount"]
    reason: str
    step: ActionCall | None = None


class RefundSummary(BaseModel):
    """What the backend says a refund step comes to, and what was refunded automatically before it.

    `refusal` is set when the backend refuses the refund outright (order not refundable, items not on it):
    there is then nothing for a human to approve; the step fails in `execute` with the backend's words.
    """

    model_config = ConfigDict(frozen=True)

    amount: Decimal = Decimal(0)
    currency: str = ""
    order_refunded: Decimal = Field(default=Decimal(0), description="automatic refunds of this order so far")
    customer_refunded: Decimal = Field(
        default=Decimal(0), description="the customer's automatic refunds in this currency, in the backend's window"
    )
    refusal: str | None = None

    @classmethod
    def from_quote(cls, quote: dict[str, Any]) -> RefundSummary:
        done = quote.get("refunded_automatically") or {}
        return cls(
            amount=Decimal(str(quote["amount"])),
            currency=str(quote["currency"]).upper(),
            order_refunded=Decimal(str(done.get("order", "0"))),
            customer_refunded=Decimal(str(done.get("customer", "0"))),
        )


class ActionPolicyError(ValueError):
    """The action policy file is missing, not YAML, or does not describe a valid policy; the message says where."""


class ActionPolicy(BaseModel):
    """Which tools each intent may use, which tools write, and the refund limits (see action_policy.yaml).

    Every tool on an allow-list must be declared a read or a write tool, so a typo fails at load, not at 2 a.m.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    intents: dict[str, list[str]] = Field(description="intent -> the tools its plan may call; [] for none")
    planners: dict[str, list[str]] = Field(
        default_factory=dict,
        description="planner -> the only tools its plans may call, whatever the intent (the LLM planner answers "
        "turns no playbook covers, whose intents allow no tools); a planner not listed is held to the intent's list",
    )
    read_tools: list[str] = Field(default_factory=list)
    write_tools: list[str] = Field(default_factory=list)
    refund_tools: list[str] = Field(default_factory=lambda: ["payments.refund"])
    refund_quote_tool: str = Field(
        default="payments.refund_quote", description="the read tool that says what a refund step comes to"
    )
    refund_limit: dict[str, Decimal] = Field(
        default_factory=lambda: {c: Decimal("100.00") for c in ("EUR", "USD", "GBP")},
        description="currency -> the largest refund the agent may issue alone; above it a human approves",
    )
    require_verification_for_writes: bool = True

    @field_validator("refund_limit")
    @classmethod
    def _limits_are_money(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for currency, limit in value.items():
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise ValueError(f"refund_limit: {currency!r} is not an ISO currency code like EUR")
            if not limit.is_finite() or limit < 0:
                raise ValueError(f"refund_limit: {currency} limit must be a non-negative number, got {limit}")
        return value

    @model_validator(mode="after")
    def _tools_are_declared(self) -> ActionPolicy:
        both = set(self.read_tools) & set(self.write_tools)
        if both:
            raise ValueError(f"tools declared both read and write: {sorted(both)}")
        declared = set(self.read_tools) | set(self.write_tools)
        for intent, tools in self.intents.items():
            unknown = [t for t in tools if t not in declared]
            if unknown:
                raise ValueError(f"intent {intent!r} allows {unknown}, which are in neither read_tools nor write_tools")
        for planner, tools in self.planners.items():
            unknown = [t for t in tools if t not in declared]
            if unknown:
                raise ValueError(f"planner {planner!r} allows {unknown}, in neither read_tools nor write_tools")
        undeclared_refund = [t for t in self.refund_tools if t not in self.write_tools]
        if undeclared_refund:
            raise ValueError(f"refund_tools {undeclared_refund} must also be listed in write_tools")
        if self.refund_tools and self.refund_quote_tool not in self.read_tools:
            raise ValueError(f"refund_quote_tool {self.refund_quote_tool!r} must be listed in read_tools")
        return self


def load_action_policy(path: Path | str = DEFAULT_ACTION_POLICY) -> ActionPolicy:
    """Read and validate a policy file at start-up; every problem raises ActionPolicyError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActionPolicyError(f"{path}: cannot read the action policy: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ActionPolicyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ActionPolicyError(f"{path}: expected a mapping with 'intents', 'read_tools', 'write_tools', ...")
    try:
        return ActionPolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ActionPolicyError(f"{path}: invalid action policy: {problems}") from exc


_SEVERITY = {"not_allowed": 0, "invalid_amount": 1, "unverified_write": 2, "needs_approval": 3}


def check_actions(
    intent: str,
    steps: list[ActionCall],
    policy: ActionPolicy,
    verified: bool,
    refunds: Mapping[str, RefundSummary] | None = None,
    planner: str | None = None,
) -> ActionFinding | None:
    """The most severe problem with the plan's steps, or None when every step may run now.

    `planner`: who made the plan; a planner the policy lists (`planners:`) is held to its own tool list instead
    of the intent's.

    `refunds` maps a refund step's idempotency key to the backend's summary of it. Severity: a tool off the
    intent's list, then a bad amount, then a write for an unverified customer, and only then a refund whose
    cumulative total passes the limit (`needs_approval`: the guard escalates with the prepared step). Fails
    closed: an unknown intent allows nothing, a step that is not an ActionCall is not allowed, a refund step
    without a summary needs a human.
    """
    allowed = policy.intents.get(intent) if isinstance(intent, str) else None
    if planner is not None and planner in policy.planners:
        allowed = policy.planners[planner]
    findings: list[ActionFinding] = []
    for step in steps:
        finding = _check_step(intent, step, allowed, policy, verified, refunds or {})
        if finding is not None:
            if finding.kind == "not_allowed":
                return finding
            findings.append(finding)
    return min(findings, key=lambda f: _SEVERITY[f.kind]) if findings else None


def _check_step(
    intent: str,
    step: Any,
    allowed: list[str] | None,
    policy: ActionPolicy,
    verified: bool,
    refunds: Mapping[str, RefundSummary],
) -> ActionFinding | None:
    if not isinstance(step, ActionCall):
        return ActionFinding(kind="not_allowed", reason="a step is not an action call")
    if allowed is None:
        return ActionFinding(kind="not_allowed", reason=f"intent {intent!r} has no action policy", step=step)
    if step.name not in allowed:
        return ActionFinding(kind="not_allowed", reason=f"{step.name} is not allowed for {intent}", step=step)
    is_refund = step.name in policy.refund_tools
    if is_refund and APPROVAL_ARGUMENT in step.arguments:
        return ActionFinding(kind="not_allowed", reason=f"{step.name}: only a human's approval may set "
                             f"{APPROVAL_ARGUMENT}", step=step)  # fmt: skip
    amount: Decimal | None = None
    if "amount" in step.arguments:
        amount, problem = _amount(step.arguments["amount"])
        if problem:
            return ActionFinding(kind="invalid_amount", reason=f"{step.name}: {problem}", step=step)
    writes = step.writes or step.name in policy.write_tools or step.name not in policy.read_tools
    if writes and policy.require_verification_for_writes and verified is not True:
        return ActionFinding(kind="unverified_write", reason=f"{step.name} changes data; verify identity first",
                             step=step)  # fmt: skip
    if is_refund:
        return _check_refund(step, amount, policy, refunds.get(step.idempotency_key))
    return None


def _check_refund(
    step: ActionCall, typed: Decimal | None, policy: ActionPolicy, summary: RefundSummary | None
) -> ActionFinding | None:
    """The refund against the limit, counting what the order and the customer were already refunded."""
    if summary is None:
        return ActionFinding(kind="needs_approval", reason="the refunds already made could not be checked",
                             step=step)  # fmt: skip
    if summary.refusal is not None:
        return None  # the backend refuses it itself, in words for the customer: nothing to approve
    currency = summary.currency.strip().upper()
    stated = step.arguments.get("currency")
    if stated is not None and (not isinstance(stated, str) or stated.strip().upper() != currency):
        return ActionFinding(kind="invalid_amount", reason=f"{step.name}: the order is in {currency}", step=step)
    if typed is not None and typed != summary.amount:
        return ActionFinding(kind="invalid_amount", reason=f"{step.name}: the items come to {summary.amount} "
                             f"{currency}, not {typed}", step=step)  # fmt: skip
    limit = policy.refund_limit.get(currency)
    if limit is None:
        return ActionFinding(kind="needs_approval", reason=f"no refund limit for {currency}", step=step)
    before = max(summary.order_refunded, summary.customer_refunded)
    if before + summary.amount > limit:
        return ActionFinding(
            kind="needs_approval",
            reason=f"refund of {summary.amount} {currency} on top of {summary.order_refunded} refunded on the order "
            f"and {summary.customer_refunded} to the customer recently passes the {limit} {currency} limit",
            step=step,
        )
    return None


_MISSING = object()


def _amount(value: Any) -> tuple[Decimal | None, str | None]:
    """A positive, finite amount with at most two decimals, or the reason it is not one."""
    if value is _MISSING or value is None:
        return None, "no amount"
    if isinstance(value, bool):
        return None, "amount is not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return None, "amount is not finite"
    if isinstance(value, int | float | Decimal):
        text = str(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        text = value.strip()
    else:
        return None, "amount is not a number"
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None, "amount is not a number"
    if not amount.is_finite():
        return None, "amount is not finite"
    if amount <= 0:
        return None, "amount must be positive"
    if amount.adjusted() >= 15 or amount != amount.quantize(Decimal("0.01")):
        return None, "amount has more than two decimals or is absurdly large"
    return amount, None
