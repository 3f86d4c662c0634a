"""Guard policies: screen what the customer wrote, what the agent wants to do, and what it is about to say.

Why rules and not a model: a guard has to be predictable and explainable ("blocked: tool-call look-alike"),
cheap enough to run on every message, and fail closed. One module per check:

- `screening`: prompt injection (override, role spoofing, tool-call look-alikes, authority claims, data
  exfiltration, encoded payloads), profanity and abuse in the customer's message; its patterns are data
  (`data/screening_patterns.yaml`, `data/profanity.txt`).
- `actions`: the plan's steps against an `ActionPolicy` (`operators/data/action_policy.yaml`).
- `reply_pii`: emails, phones, IBANs and card numbers in the reply.
- `grounding`: a generated reply's numbers, links and claimed actions against its sources.
"""

from operators.policy.actions import (
    APPROVAL_ARGUMENT,
    DEFAULT_ACTION_POLICY,
    ActionFinding,
    ActionPolicy,
    ActionPolicyError,
    RefundSummary,
    check_actions,
    load_action_policy,
)
from operators.policy.grounding import GroundingFinding, check_grounding
from operators.policy.reply_pii import ReplyFinding, check_reply_pii
from operators.policy.screening import InputFinding, normalize_text, screen_input

__all__ = [
    "APPROVAL_ARGUMENT",
    "DEFAULT_ACTION_POLICY",
    "ActionFinding",
    "ActionPolicy",
    "ActionPolicyError",
    "GroundingFinding",
    "InputFinding",
    "RefundSummary",
    "ReplyFinding",
    "check_actions",
    "check_grounding",
    "check_reply_pii",
    "load_action_policy",
    "normalize_text",
    "screen_input",
]
