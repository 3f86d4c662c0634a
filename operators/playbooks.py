"""Playbooks: one YAML file per intent, saying what the agent needs, checks, asks and does.

A playbook names the slots the task needs (filled from the message's entities, earlier turns of
the session, or by asking), whether the customer must prove who they are before any step runs,
the confirmation question a write action needs, the steps (backend tools and their arguments)
and the reply for each outcome. The folder is users' to edit; `load_playbooks` validates every
file at start and reports each problem with its file and field, so a typo never surfaces as a
customer's failed turn.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from operators.nlu.slots import SlotKind

__all__ = [
    "OUTCOMES",
    "Playbook",
    "PlaybookError",
    "SlotSpec",
    "StepSpec",
    "load_playbooks",
    "placeholders",
]

DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "playbooks"
Outcome = Literal[
    "succeeded", "declined", "not_found", "not_allowed", "invalid", "unverified", "failed", "needs_approval"
]
OUTCOMES: tuple[str, ...] = Outcome.__args__  # type: ignore[attr-defined]
DEFAULT_REPLIES: dict[str, str] = {
    "declined": "No problem, I've left everything as it was.",
    "not_found": "I couldn't find that on your account. Could you check the number?",
    "not_allowed": "I'm sorry, I can't do that: {error}",
    "invalid": "Something in that request doesn't look right: {error}",
    "unverified": "I couldn't verify your identity with those details, so I can't go ahead.",
    "failed": "Sorry, something went wrong on our side, so nothing was changed. A colleague will follow up.",
    "needs_approval": "I can't do that on my own: {error} Nothing was changed; a colleague can help if you ask.",
}
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class PlaybookError(ValueError):
    """One or more playbook files are unusable; the message lists every problem with its file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlotSpec(_Strict):
    """Where a value comes from: an NLU entity type, else a regex over the message, else asking."""

    entity: str | None = Field(default=None, description="NLU entity type, e.g. order_number, amount, email")
    field: Literal["normalized", "value", "currency"] = Field(
        default="normalized", description="which part of the entity: its normalized form, the text, or its currency"
    )
    pattern: str | None = Field(default=None, description="regex over the message text; group 1 (or all) is the value")
    ask: str = Field(description="the question when the value is missing")
    extract: SlotKind | None = Field(
        default=None,
        description="free text answered in a sentence: take off the lead-in ('sure, it's ...', 'sorry - ') before "
        "the pattern, and read 'everything in that order' as 'all' for items (operators/nlu/slots.py)",
    )
    remember: bool = Field(default=True, description="keep the value in the session for later tasks")
    only_when_asked: bool = Field(
        default=False,
        description="filled only from the answer to its own question (for free text such as the items to refund, "
        "which a pattern would otherwise take from the first message)",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


class StepSpec(_Strict):
    tool: str
    arguments: dict[str, str] = Field(default_factory=dict, description="argument -> template, e.g. '{order_number}'")
    save_as: str | None = Field(default=None, description="name under which the result's fields reach the reply")
    writes: bool = Field(default=False, description="changes something: needs the confirmation and runs once")

    @field_validator("tool")
    @classmethod
    def _tool_name(cls, value: str) -> str:
        if not TOOL_NAME.match(value):
            raise ValueError(f"tool names look like 'orders.cancel_order', not {value!r}")
        return value


class Playbook(_Strict):
    intent: str
    description: str = ""
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    verify: bool = Field(default=False, description="prove identity (order number + email or ZIP) before any step")
    confirm: str | None = Field(default=None, description="the yes/no question before write steps")
    steps: list[StepSpec] = Field(default_factory=list)
    replies: dict[Outcome, str]

    @model_validator(mode="after")
    def _consistent(self) -> Playbook:
        if "succeeded" not in self.replies:
            raise ValueError("replies needs a 'succeeded' entry")
        if any(step.writes for step in self.steps) and not self.confirm:
            raise ValueError("a playbook with a write step needs a 'confirm' question")
        if self.verify and "order_number" not in self.slots:
            raise ValueError("verify needs an 'order_number' slot: identity is proven against an order")
        known = set(self.slots) | {"error", "customer_name"}
        saved = {step.save_as for step in self.steps if step.save_as}
        for where, template in self._templates():
            for name in placeholders(template):
                root = name.split(".", 1)[0]
                if root not in known and root not in saved:
                    raise ValueError(f"{where} uses {{{name}}}, which is neither a slot nor a step's save_as")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        out = [(f"replies.{k}", v) for k, v in self.replies.items()]
        out += [(f"slots.{k}.ask", v.ask) for k, v in self.slots.items()]
        out += [("confirm", self.confirm)] if self.confirm else []
        out += [(f"steps[{i}].arguments.{k}", v) for i, s in enumerate(self.steps) for k, v in s.arguments.items()]
        return out

    def reply_for(self, outcome: str) -> str:
        return self.replies.get(outcome) or DEFAULT_REPLIES.get(outcome) or DEFAULT_REPLIES["failed"]  # type: ignore[call-overload]

    @property
    def writes(self) -> bool:
        return any(step.writes for step in self.steps)


def placeholders(template: str) -> list[str]:
    """The `{name}` / `{name.field}` fields of a str.format template."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def load_playbooks(folder: Path = DEFAULT_FOLDER) -> dict[str, Playbook]:
    """Every `*.yaml` in the folder, by intent; raises PlaybookError listing every bad file and field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PlaybookError(f"no playbook folder at {folder}")
    playbooks: dict[str, Playbook] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            playbook = Playbook.model_validate(data)
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: not valid YAML: {exc}")
            continue
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "(file)"
                problems.append(f"{path.name}: {where}: {error['msg']}")
            continue
        if playbook.intent in playbooks:
            problems.append(f"{path.name}: a second playbook for intent {playbook.intent!r}")
            continue
        playbooks[playbook.intent] = playbook
    if problems:
        raise PlaybookError("invalid playbooks:\n  " + "\n  ".join(problems))
    return playbooks
