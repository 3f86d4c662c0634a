"""plan: decide what to do and say for the turn, from the intent's playbook.

An intent with a playbook (`playbooks/<intent>.yaml`, see `operators/playbooks.py`) becomes a
task kept in the session: slots are filled from this message's entities, from what the customer
said earlier in the session (on any channel), or by asking; the customer proves who they are
(order number plus the account's email or ZIP) before any step; write steps wait for an
unambiguous yes (`operators/nlu/confirmation.py`): an unclear answer is asked again once, and a
second one ends the task with nothing written. Each turn's output is a `Plan` — data: the steps
to run now, the write steps waiting for a yes (so policy can check them before the question is
even asked), and the reply per outcome.

An intent without a playbook is answered from its reply template (`operators/data/replies.yaml`),
as before. The LLM planner (`operators/llm_plan.py`) may replace such a turn's plan with the same kind
of `Plan`; the write steps it proposes wait in the session's task (`TaskState.planner == "llm-plan-v1"`),
and this operator, not the model, runs them: after the identity check (the same question and tool as a
playbook's) and an unambiguous yes on a later turn, asked once more at most.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.nlu.confirmation import Confirmation, classify_confirmation, says_yes_or_no
from operators.nlu.slots import clean_value, is_question
from operators.playbooks import DEFAULT_FOLDER, Playbook, load_playbooks
from operators.protocols import OperatorContext
from schemas import VERIFY_TOOL, ActionCall, Plan, PlannedTurn, RoutedTurn, SessionContext, TaskState

DEFAULT_REPLIES = Path(__file__).parent / "data" / "replies.yaml"
FALLBACK_INTENT = "out_of_scope"
VERIFY_ASK = (
    "Before I look into your account: please tell me the email address or the ZIP code on the account "
    "that placed order {order_number}."
)
REASK_PREFIX = "I need a clear yes or no before I change anything. "
LEFT_AS_IS = "I didn't get a clear yes, so I've left everything as it is. Just ask again whenever you're ready."
MAX_CONFIRM_REASKS = 1
LLM_PLANNER = "llm-plan-v1"
# the LLM planner's task: `actions` says in plain words what the pending write steps would do
LLM_CONFIRM = "Here is what I can do for you: {actions}. Shall I go ahead? Please answer yes or no."
LLM_DONE = "Done: {actions}."
LLM_DECLINED = "All right, I haven't changed anything."
# a question asked while a task waits is answered, then the task's own question comes again
ASIDE_UNKNOWN = "I can't answer that one here, but a colleague can once we're done, if you ask for one."
ASIDE_RESUME = " Back to your request: "
ASIDE_RECAP = "Here is what I'd do, with the details: "
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
ZIP = re.compile(r"(?<![\d-])(\d{5})(?![\d-])")


class PlanConfig(OperatorConfig):
    replies_file: Path = DEFAULT_REPLIES
    playbooks_dir: Path = DEFAULT_FOLDER
    switch_confidence: float = Field(
        default=0.9, ge=0.0, le=1.0, description="a different intent this sure abandons the task under way"
    )
    aside_confidence: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="a question asked while a task waits is answered from its intent's template when this sure",
    )


def load_replies(path: Path) -> dict[str, dict[str, Any]]:
    """Read the templates, failing at start (not per record) when the file is unusable."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or FALLBACK_INTENT not in data:
        raise ValueError(f"{path}: expected a mapping of intent to templates with an {FALLBACK_INTENT!r} entry")
    return data


def idempotency_key(task_id: str, tool: str, arguments: dict[str, Any]) -> str:
    """Derived from the task's first message id, the tool and its arguments: a replayed turn repeats it."""
    canonical = json.dumps(arguments, sort_keys=True, default=str)
    return "k-" + hashlib.sha256(f"{task_id}|{tool}|{canonical}".encode()).hexdigest()[:32]


class PlaybookPlanner(Operator[RoutedTurn, PlannedTurn]):
    """Turn the intent's playbook and the session's task into this turn's `Plan`."""

    name = "plan"
    input_type = RoutedTurn
    output_type = PlannedTurn
    Config: ClassVar[type[OperatorConfig]] = PlanConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._replies: dict[str, dict[str, Any]] = {}
        self._playbooks: dict[str, Playbook] = {}

    def warm_up(self, ctx: OperatorContext) -> None:
        config: PlanConfig = self.config  # type: ignore[assignment]
        self._replies = load_replies(config.replies_file)
        self._playbooks = load_playbooks(config.playbooks_dir)

    async def run(self, record: RoutedTurn, ctx: OperatorContext) -> PlannedTurn:
        if not self._replies:
            self.warm_up(ctx)
        session = record.session.model_copy(deep=True)
        waiting = session.task
        if waiting is not None and waiting.planner == LLM_PLANNER:
            llm_plan = self._continue_llm_task(record, session, waiting)
            if llm_plan is not None:
                return PlannedTurn(**{**dict(record), "session": session}, plan=llm_plan)
            session.task = waiting = None  # the customer moved on: nothing it proposed runs
        if waiting is not None and waiting.intent in self._playbooks:
            playbook = self._playbooks[waiting.intent]
            if self._is_aside(waiting, playbook, record):
                plan = self._aside(record, session, waiting, playbook)
                return PlannedTurn(**{**dict(record), "session": session}, plan=plan)
        task = self._task_for(record, session)
        if task is None:
            session.task = None
            return PlannedTurn(**{**dict(record), "session": session}, plan=self._from_template(record))
        plan = self._advance(record, session, task, self._playbooks[task.intent])
        return PlannedTurn(**{**dict(record), "session": session}, plan=plan)

    def _task_for(self, record: RoutedTurn, session: SessionContext) -> TaskState | None:
        """The task under way, unless the customer clearly moved on; else a new one for a playbook intent."""
        config: PlanConfig = self.config  # type: ignore[assignment]
        nlu = record.nlu
        task = session.task
        if task is not None and task.intent in self._playbooks:
            moved_on = (
                nlu.intent not in (task.intent, FALLBACK_INTENT)
                and nlu.confidence >= config.switch_confidence
                and not self._answers(task, record)
            )
            if not moved_on:
                return task
        if nlu.intent in self._playbooks:
            return TaskState(
                task_id=record.message.message_id, intent=nlu.intent, started_at=record.message.received_at
            )
        return None

    def _answers(self, task: TaskState, record: RoutedTurn) -> bool:
        text = record.message.text
        if task.awaiting == "confirmation":
            return classify_confirmation(text) is not Confirmation.UNCLEAR
        if task.awaiting == "verification":
            return bool(EMAIL.search(text) or ZIP.search(text))
        if task.awaiting == "slot" and task.awaiting_slot:
            return self._slot_value(self._playbooks[task.intent], task.awaiting_slot, record) is not None
        return False

    def _is_aside(self, task: TaskState, playbook: Playbook, record: RoutedTurn) -> bool:
        """A question in the middle of the task ("how much will I get back?") that answers nothing it waits for.

        Such a question is neither the yes, the ZIP nor the items, and it must not end the task, count
        as an unclear confirmation, or be taken for the free-text answer ("what's your return policy?"
        as the items to return). A question for another playbook naming an order of its own is a new
        request instead (`_task_for` switches to it).
        """
        text = record.message.text
        if task.awaiting is None or not is_question(text):
            return False
        nlu = record.nlu
        config: PlanConfig = self.config  # type: ignore[assignment]
        named = {e.normalized or e.value for e in nlu.entities if e.type == "order_number"}
        if (
            nlu.intent in self._playbooks
            and nlu.intent != task.intent
            and nlu.confidence >= config.switch_confidence
            and named - {task.slots.get("order_number")}
        ):
            return False  # "can you cancel 1234567 instead?": a request of its own
        if task.awaiting == "confirmation":
            return not says_yes_or_no(text)
        if task.awaiting == "verification":
            return not (EMAIL.search(text) or ZIP.search(text))
        if task.awaiting == "slot" and task.awaiting_slot in playbook.slots:
            spec = playbook.slots[task.awaiting_slot]
            if spec.extract in ("items", "changes", "replacement"):
                # any text fills a free-text slot: only a confident other intent tells a question from an answer
                return (
                    nlu.intent not in (task.intent, FALLBACK_INTENT)
                    and nlu.intent in self._replies
                    and nlu.confidence >= config.aside_confidence
                )
            return self._slot_value(playbook, task.awaiting_slot, record) is None
        return False

    def _aside(self, record: RoutedTurn, session: SessionContext, task: TaskState, playbook: Playbook) -> Plan:
        """Answer the side question, keep the task as it waits, and ask its question again."""
        config: PlanConfig = self.config  # type: ignore[assignment]
        nlu = record.nlu
        known = nlu.intent != FALLBACK_INTENT and nlu.intent in self._replies
        aside: str | None = None
        if nlu.intent != task.intent and known and nlu.confidence >= config.aside_confidence:
            aside = self._replies[nlu.intent]["default"].replace("{", "{{").replace("}", "}}")
            answer = aside + ASIDE_RESUME
        elif task.awaiting == "confirmation":
            # "how much will I get back?": the confirmation carries the details (items, amount, order)
            answer = ASIDE_RECAP
        elif nlu.intent == task.intent:
            answer = ""  # a question about the task itself: its own question says what it needs
        else:
            answer = ASIDE_UNKNOWN + ASIDE_RESUME
        base = {"planner": "playbooks-v1", "intent": task.intent, "replies": dict(playbook.replies), "aside": aside}
        session.task = task
        variables = dict(task.slots)
        if task.awaiting == "confirmation":
            # the reads run again so the question shows the backend's quote as before; the writes still wait
            verified = not playbook.verify or session.verified
            if verified:
                return Plan(
                    **base,
                    steps=[self._step(task, s) for s in playbook.steps if not s.writes],
                    pending_steps=[self._step(task, s) for s in playbook.steps if s.writes],
                    reply_template=answer + (playbook.confirm or ""),
                    reply_variables=variables,
                    awaiting="confirmation",
                )
            task.awaiting, task.awaiting_slot = "verification", None
        if task.awaiting == "slot" and task.awaiting_slot in playbook.slots:
            question = playbook.slots[task.awaiting_slot].ask
            return Plan(**base, reply_template=answer + question, reply_variables=variables, awaiting="slot")
        task.awaiting, task.awaiting_slot = "verification", None
        return Plan(**base, reply_template=answer + VERIFY_ASK, reply_variables=variables, awaiting="verification")

    def _slot_value(self, playbook: Playbook, name: str, record: RoutedTurn) -> str | None:
        spec = playbook.slots[name]
        for entity in record.nlu.entities:
            if spec.entity and entity.type == spec.entity:
                value = {"normalized": entity.normalized or entity.value, "value": entity.value}.get(
                    spec.field, entity.currency
                )
                if value:
                    return value
        if spec.pattern:
            text: str | None = record.message.text
            if spec.extract is not None:
                text = clean_value(spec.extract, record.message.text)
                if text is None:
                    return None
            match = re.search(spec.pattern, text)
            if match:
                return (match.group(1) if match.groups() else match.group(0)).strip()
        return None

    def _advance(self, record: RoutedTurn, session: SessionContext, task: TaskState, playbook: Playbook) -> Plan:
        text = record.message.text
        for name, spec in playbook.slots.items():
            if name not in task.slots:
                if spec.only_when_asked and (task.awaiting, task.awaiting_slot) != ("slot", name):
                    continue
                value = self._slot_value(playbook, name, record)
                if value is None and spec.remember:
                    value = session.slots.get(name)
                if value is not None:
                    task.slots[name] = value
                    if spec.remember:
                        session.slots[name] = value

        base = {"planner": "playbooks-v1", "intent": task.intent, "replies": dict(playbook.replies)}
        answer = classify_confirmation(text) if task.awaiting == "confirmation" else None
        if answer is Confirmation.NO:
            session.task = None
            return Plan(**base, reply_template=playbook.reply_for("declined"), reply_variables=dict(task.slots))
        if answer is Confirmation.UNCLEAR:
            if task.confirm_reasks >= MAX_CONFIRM_REASKS:
                # asking a third time would wear the customer down into a yes; nothing changes instead
                session.task = None
                return Plan(**base, reply_template=LEFT_AS_IS, reply_variables=dict(task.slots))
            task.confirm_reasks += 1

        missing = [name for name in playbook.slots if name not in task.slots]
        if missing:
            # the same question again counts towards "no progress" (execute); the next slot's question is progress
            repeated = (task.awaiting, task.awaiting_slot) == ("slot", missing[0])
            task.asked_turns = task.asked_turns + 1 if repeated else 1
            task.awaiting, task.awaiting_slot = "slot", missing[0]
            session.task = task
            return Plan(
                **base,
                reply_template=playbook.slots[missing[0]].ask,
                reply_variables=dict(task.slots),
                awaiting="slot",
            )

        steps: list[ActionCall] = []
        if playbook.verify and not session.verified:
            # only an answer to the identity question counts: a ZIP inside a new address is not one
            credential = self._credential(text) if task.awaiting == "verification" else None
            if credential is None:
                task.awaiting, task.awaiting_slot = "verification", None
                session.task = task
                return Plan(
                    **base, reply_template=VERIFY_ASK, reply_variables=dict(task.slots), awaiting="verification"
                )
            arguments = {"order_number": task.slots["order_number"], **credential}
            steps.append(self._call(task, VERIFY_TOOL, arguments, writes=False))

        reads = [self._step(task, s) for s in playbook.steps if not s.writes]
        writes = [self._step(task, s) for s in playbook.steps if s.writes]
        confirmed = answer is Confirmation.YES
        if writes and not confirmed:
            task.awaiting, task.awaiting_slot = "confirmation", None
            session.task = task
            question = playbook.confirm or ""
            return Plan(
                **base,
                steps=steps + reads,
                pending_steps=writes,
                reply_template=REASK_PREFIX + question if answer is Confirmation.UNCLEAR else question,
                reply_variables=dict(task.slots),
                awaiting="confirmation",
            )
        session.task = None  # this turn finishes the task, whatever the outcome
        return Plan(
            **base,
            steps=steps + reads + writes,
            reply_template=playbook.reply_for("succeeded"),
            reply_variables=dict(task.slots),
        )

    def _continue_llm_task(self, record: RoutedTurn, session: SessionContext, task: TaskState) -> Plan | None:
        """The LLM planner's task on a later turn: the identity check, then the yes; None when the customer
        moved on (the task is dropped, nothing it proposed runs)."""
        config: PlanConfig = self.config  # type: ignore[assignment]
        text, nlu = record.message.text, record.nlu
        moved_on = nlu.intent not in (task.intent, FALLBACK_INTENT) and nlu.confidence >= config.switch_confidence
        base: dict[str, Any] = {"planner": LLM_PLANNER, "intent": task.intent}
        variables = dict(task.slots)
        if task.awaiting == "verification":
            credential = self._credential(text)
            if credential is None:
                if moved_on or "order_number" not in task.slots:
                    return None
                task.asked_turns += 1
                session.task = task
                return Plan(**base, reply_template=VERIFY_ASK, reply_variables=variables, awaiting="verification")
            verify = self._call(task, VERIFY_TOOL, {"order_number": task.slots["order_number"], **credential}, False)
            task.awaiting = "confirmation"
            session.task = task
            return Plan(**base, steps=[verify, *task.steps], pending_steps=list(task.pending_steps),
                        reply_template=LLM_CONFIRM, reply_variables=variables, awaiting="confirmation")  # fmt: skip
        if task.awaiting != "confirmation" or not task.pending_steps:
            return None
        answer = classify_confirmation(text)
        if answer is Confirmation.YES:
            session.task = None  # this turn finishes the task, whatever the outcome
            return Plan(**base, steps=list(task.pending_steps), reply_template=LLM_DONE, reply_variables=variables)
        if answer is Confirmation.NO:
            session.task = None
            return Plan(**base, reply_template=LLM_DECLINED, reply_variables=variables)
        if moved_on:
            return None
        if task.confirm_reasks >= MAX_CONFIRM_REASKS:
            session.task = None
            return Plan(**base, reply_template=LEFT_AS_IS, reply_variables=variables)
        task.confirm_reasks += 1
        session.task = task
        return Plan(**base, pending_steps=list(task.pending_steps), reply_template=REASK_PREFIX + LLM_CONFIRM,
                    reply_variables=variables, awaiting="confirmation")  # fmt: skip

    @staticmethod
    def _credential(text: str) -> dict[str, str] | None:
        email = EMAIL.search(text)
        if email:
            return {"email": email.group(0)}
        zip_code = ZIP.search(text)
        return {"zip": zip_code.group(1)} if zip_code else None

    def _step(self, task: TaskState, spec: Any) -> ActionCall:
        arguments = {name: template.format(**task.slots) for name, template in spec.arguments.items()}
        call = self._call(task, spec.tool, arguments, writes=spec.writes)
        return call.model_copy(update={"save_as": spec.save_as}) if spec.save_as else call

    @staticmethod
    def _call(task: TaskState, tool: str, arguments: dict[str, Any], writes: bool) -> ActionCall:
        return ActionCall(
            name=tool,
            arguments=arguments,
            idempotency_key=idempotency_key(task.task_id, tool, arguments),
            writes=writes,
        )

    def _from_template(self, record: RoutedTurn) -> Plan:
        intent = record.nlu.intent if record.nlu.intent in self._replies else FALLBACK_INTENT
        entry = self._replies[intent]
        entities = {e.type: e.value for e in record.nlu.entities}
        template, variables = entry["default"], {}
        for entity_type, variant in (entry.get("with") or {}).items():
            if entity_type in entities:
                template, variables = variant, {entity_type: entities[entity_type]}
                break
        return Plan(planner="templates-v1", intent=intent, reply_template=template, reply_variables=variables)
