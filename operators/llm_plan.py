"""llm_plan: the planner with tools. A language model plans the turns no playbook covers.

It follows `answer` (which passes it the knowledge gaps, `gaps_to_reply`) and acts only when a model is
configured and either `plan` answered the turn from a reply template (planner `templates-v1`, an intent not in
`skip_intents`: a question the knowledge base could not answer, an unfamiliar request) or the session shows a
failing task (`session.failed_turns >= failing_turns`); every other turn passes untouched (the cascade's
rule: a known task with a playbook needs no LLM). The model gets the conversation's recent turns, the
customer's verified context and any retrieved passages (all as labelled untrusted text,
`operators/llm/prompts/plan.v1.yaml`), and is offered the tools the action policy allows the LLM planner
(`action_policy.yaml: planners`), each as an OpenAI function whose parameters are the tool's own argument
model's JSON Schema.

What the model answers is parsed deterministically (`parse_tool_calls`): a call of a tool not offered,
arguments that are not a JSON object or fail the tool's argument model, an order number the customer never
gave, a reserved argument, a repeat, or a call past `max_steps` is dropped and counted
(`supportflow_llm_plan_dropped_calls_total{reason}`). The calls that remain become a `Plan` (planner
`llm-plan-v1`): read calls run this turn; write calls never do. They wait in the session's task
(`TaskState.planner`) with a deterministic confirmation question, after the identity check when the session
is not verified (the playbooks' question and `crm.verify_identity`), and `plan` runs them only after an
unambiguous yes on a later turn, with idempotency keys derived from this turn's message id as a playbook's
are. `authorize` checks every step against the action policy as for playbooks (a refund over the limit goes
to a human with the prepared action). The model's reply text becomes the reply template, marked as generated
(`Plan.fallback_template` keeps the template turn's reply): `guard` sends it only when every number, link and
action it states is grounded in the turn's tool results and the customer's words, and the template reply
otherwise. No tier answering, or nothing usable in the answer, leaves the turn as `plan` made it.

Branches: `reply` (its plan, or the turn as it came) and `human` (a knowledge gap it did not plan: the
hand-over `answer` would have made, with the passages). Remove it in topology.yaml by moving its `reply`
chain up under `answer`'s `reply` and setting `answer`'s `gaps_to_reply` false: the LLM-planned tasks still in
sessions finish or lapse through `plan`, which never needs a model for them.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import Counter
from pydantic import BaseModel, Field, ValidationError

from operators.answer import knowledge_gap
from operators.base import Operator, OperatorConfig
from operators.compose import fit, usage_of
from operators.llm import Prompt, load_prompt, untrusted
from operators.plan import LLM_CONFIRM, LLM_PLANNER, VERIFY_ASK, idempotency_key
from operators.policy import DEFAULT_ACTION_POLICY, ActionPolicy, load_action_policy
from operators.policy.actions import APPROVAL_ARGUMENT
from operators.protocols import LanguageModel, LlmAnswer, LlmToolCall, OperatorContext
from schemas import VERIFY_TOOL, ActionCall, Plan, PlannedTurn, TaskState

log = logging.getLogger(__name__)

__all__ = ["Accepted", "LlmPlanner", "OfferedTool", "Parsed", "parse_tool_calls", "render_plan_prompt"]

TEMPLATE_PLANNER = "templates-v1"
TURNS = Counter(
    "supportflow_llm_plan_turns_total",
    "Turns the LLM planner was asked to plan, by outcome (planned, no_tier: no model answered, truncated: cut by "
    "the token budget, nothing_usable).",
    ["outcome"],
)
DROPPED = Counter(
    "supportflow_llm_plan_dropped_calls_total",
    "Tool calls a model proposed that the LLM planner dropped, by reason (unknown_tool, malformed_json, "
    "invalid_arguments, reserved_argument, unmentioned_order, duplicate, too_many, unverifiable).",
    ["reason"],
)
ORDER_NUMBER = re.compile(r"(?<!\d)#?(\d{7})(?!\d)")
_FUNCTION_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_UNSHOWN = re.compile(r"[^\w ,'-]+")
# what a write does, in the confirmation question's words; other tools are named as they are
WRITE_LABELS = {
    "payments.refund": "refund {items}on order {order_number}",
    "orders.cancel_order": "cancel order {order_number}",
    "orders.create_return": "return {items}from order {order_number}",
    "orders.change_address": "change the delivery address of order {order_number}",
}


class LlmPlanConfig(OperatorConfig):
    tiers: list[str] = Field(default_factory=lambda: ["large"], description="tried in this order")
    prompt: str = Field(default="plan.v1", description="operators/llm/prompts/<prompt>.yaml")
    max_steps: int = Field(default=3, ge=1, le=10, description="tool calls kept per turn; the rest are dropped")
    skip_intents: list[str] = Field(
        default_factory=lambda: ["contact_human_agent", "contact_customer_service"],
        description="intents whose template always stands",
    )
    failing_turns: int | None = Field(
        default=2,
        ge=1,
        description="also plan a turn when the session has this many turns without progress (unset: never). "
        "`route` hands such sessions to a human at its own `max_failed_turns` (2) first",
    )
    tools: list[str] | None = Field(
        default=None,
        description="the tools offered to the model; unset: those the action policy allows the LLM planner "
        "(`planners: llm-plan-v1`). Either way only tools the policy allows and a connector offers",
    )
    policy_file: Path = DEFAULT_ACTION_POLICY
    history_turns: int = Field(default=6, ge=0, le=50, description="earlier turns of the conversation shown")
    passages: int = Field(default=3, ge=0, le=10, description="retrieved passages shown, when the plan has some")
    max_reply_chars: int = Field(default=700, ge=50, description="a longer reply is cut after a whole sentence")


@dataclass(frozen=True)
class OfferedTool:
    """A tool as the model is offered it: its function name, whether it writes, and its argument model."""

    name: str
    writes: bool
    description: str
    arguments: type[BaseModel]

    @property
    def function_name(self) -> str:
        """OpenAI function names allow letters, digits, `_` and `-`: `orders.get_order` -> `orders__get_order`."""
        return _FUNCTION_NAME.sub("_", self.name.replace(".", "__"))[:64]

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.function_name,
                "description": self.description + (" Changes data: the customer confirms it first." * self.writes),
                "parameters": self.arguments.model_json_schema(),
            },
        }


@dataclass(frozen=True)
class Accepted:
    tool: OfferedTool
    arguments: dict[str, Any]


@dataclass
class Parsed:
    accepted: list[Accepted] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (tool name as written, reason)

    def drop(self, name: str, reason: str) -> None:
        self.dropped.append((name, reason))
        DROPPED.labels(reason).inc()

    @property
    def reasons(self) -> Tally[str]:
        return Tally(reason for _, reason in self.dropped)


def parse_tool_calls(
    calls: Sequence[LlmToolCall], offered: Iterable[OfferedTool], *, max_steps: int, known_orders: Iterable[str]
) -> Parsed:
    """The calls that may become steps, and the others with the reason each was dropped. Deterministic.

    `offered`: the tools the model was given (a call of any other is dropped, whatever its name says);
    `known_orders`: the order numbers the customer gave this session (a call naming another is dropped).
    """
    tools: dict[str, OfferedTool] = {}
    for tool in offered:
        tools[tool.function_name] = tool
        tools.setdefault(tool.name, tool)
    orders = set(known_orders)
    parsed = Parsed()
    seen: set[str] = set()
    for call in calls:
        name = str(call.name or "")
        tool = tools.get(name)
        if tool is None:
            parsed.drop(name, "unknown_tool")
            continue
        raw = (call.arguments or "").strip() or "{}"
        try:
            arguments = json.loads(raw)
        except (ValueError, RecursionError):
            parsed.drop(name, "malformed_json")
            continue
        if not isinstance(arguments, dict):
            parsed.drop(name, "malformed_json")
            continue
        if APPROVAL_ARGUMENT in arguments:
            parsed.drop(name, "reserved_argument")  # only a human's approval in the workspace sets it
            continue
        try:
            valid = tool.arguments.model_validate(arguments)
        except (ValidationError, ValueError, TypeError):
            parsed.drop(name, "invalid_arguments")
            continue
        clean = valid.model_dump(mode="json", exclude_unset=True)
        order = clean.get("order_number")
        if order is not None and str(order) not in orders:
            parsed.drop(name, "unmentioned_order")
            continue
        canonical = json.dumps([tool.name, clean], sort_keys=True, default=str)
        if canonical in seen:
            parsed.drop(name, "duplicate")
            continue
        if len(parsed.accepted) >= max_steps:
            parsed.drop(name, "too_many")
            continue
        seen.add(canonical)
        parsed.accepted.append(Accepted(tool, clean))
    return parsed


def known_orders(record: PlannedTurn) -> list[str]:
    """The order numbers the customer gave this session: their own words, the slots they filled."""
    said = [h.text for h in record.session.history if h.role == "customer"] + [record.message.text]
    found = [m.group(1) for text in said for m in ORDER_NUMBER.finditer(text)]
    found += [e.normalized or e.value for e in record.nlu.entities if e.type == "order_number"]
    found += [v for k, v in record.session.slots.items() if k == "order_number"]
    return list(dict.fromkeys(o.removeprefix("#") for o in found if o))


def render_plan_prompt(prompt: Prompt, record: PlannedTurn, cfg: LlmPlanConfig) -> tuple[dict[str, str], ...]:
    """The chat messages for this turn: every text a customer, a tool or an article wrote is untrusted."""
    session, message = record.session, record.message
    customer: list[str] = []
    if session.verified:
        customer.append("identity: verified in this session")
        profile = record.profile
        if profile is not None and profile.customer_id == message.customer_id and profile.display_name:
            customer.append("name: " + untrusted("profile", profile.display_name))
    else:
        customer.append("identity: not verified (the system asks for the identity check before account actions)")
    orders = known_orders(record)
    if orders:
        customer.append("order numbers the customer gave: " + untrusted("customer", ", ".join(orders)))
    earlier = [h for h in session.history if h.message_id != message.message_id]
    earlier = earlier[-cfg.history_turns :] if cfg.history_turns else []
    history = "\n".join(f"{h.role}: {untrusted(h.role, h.text)}" for h in earlier) or "(none)"
    knowledge = record.plan.knowledge
    passages = list(knowledge.passages[: cfg.passages]) if knowledge is not None else []
    return prompt.render(
        channel=message.channel,
        max_steps=str(cfg.max_steps),
        customer="\n".join(customer),
        history=history,
        passages="\n".join(untrusted("article", f"{p.title}\n{p.text}") for p in passages) or "(none)",
        message=untrusted("customer", message.text),
    )


def shown(value: Any, limit: int = 60) -> str:
    """A value the model chose, as the confirmation question may show it: words and numbers only, short (no
    link, address or markup can ride into the question on an item's name)."""
    return " ".join(_UNSHOWN.sub(" ", str(value)).split())[:limit]


def describe(call: ActionCall) -> str:
    """A write step in the confirmation question's words, from its checked arguments."""
    arguments = call.arguments
    items = arguments.get("items")
    named = ""
    if isinstance(items, list) and items:
        parts = []
        for item in items:
            if isinstance(item, dict):
                name = shown(item.get("name") or item.get("sku") or "")
                parts.append(f"{item['qty']} x {name}" if isinstance(item.get("qty"), int) else name)
        named = ", ".join(p for p in parts if p) + " "
    label = WRITE_LABELS.get(call.name)
    if label is not None and "order_number" in arguments:
        return label.format(items=named.lstrip() or "all items ", order_number=shown(arguments["order_number"]))
    details = ", ".join(f"{k}: {shown(v)}" for k, v in arguments.items() if k != "reason")
    return f"{call.name} ({details})" if details else call.name


def escape(text: str) -> str:
    """A generated text as a reply template: its braces are text, never fields."""
    return text.replace("{", "{{").replace("}", "}}")


def usable_text(answer: LlmAnswer, limit: int) -> str | None:
    """The model's reply, when it is one: not empty, not a tool call written as text, within the limit."""
    text = (answer.text or "").strip()
    if not text or text.startswith(("{", "[", "<")) or "tool_call" in text.lower():
        return None
    return fit(text, limit)


class LlmPlanner(Operator[PlannedTurn, PlannedTurn]):
    """Plan the turns no playbook covers with a language model and the policy's tools; never run a write."""

    name = "llm_plan"
    input_type = PlannedTurn
    output_type = PlannedTurn
    Config: ClassVar[type[OperatorConfig]] = LlmPlanConfig
    branches = ("reply", "human")

    def choose_branch(self, output: PlannedTurn) -> str:
        """`human` for a knowledge gap `answer` passed on (`gaps_to_reply`) that the model did not plan."""
        if output.plan.planner == LLM_PLANNER:
            return "reply"
        return "human" if knowledge_gap(output) else "reply"

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._model: LanguageModel | None = None
        self._policy: ActionPolicy | None = None
        self._prompt: Prompt | None = None
        self._offered: list[OfferedTool] | None = None
        self._warmed = False

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: LlmPlanConfig = self.config  # type: ignore[assignment]
        self._warmed = True
        self._prompt = load_prompt(cfg.prompt)
        self._policy = load_action_policy(cfg.policy_file)
        self._model = ctx.clients.language_model() if ctx.clients is not None else None
        if self._model is not None:
            unknown = [t for t in cfg.tiers if t not in self._model.tier_names]
            if unknown:
                log.warning("llm_plan: tiers %s are not configured (llm_tiers has %s)", unknown, self._model.tier_names)
        outside = [t for t in cfg.tools or () if t not in self._policy.planners.get(LLM_PLANNER, [])]
        if outside:
            log.warning("llm_plan: tools %s are not offered: the action policy does not allow them", outside)

    def wants(self, record: PlannedTurn) -> bool:
        """Whether this turn is the LLM planner's: no playbook covers it, or its task keeps failing."""
        cfg: LlmPlanConfig = self.config  # type: ignore[assignment]
        plan = record.plan
        if plan.planner == LLM_PLANNER or record.route.branch != "auto":
            return False
        if plan.planner == TEMPLATE_PLANNER:
            return plan.intent not in cfg.skip_intents and record.nlu.intent not in cfg.skip_intents
        failing = cfg.failing_turns is not None and record.session.failed_turns >= cfg.failing_turns
        return failing and plan.awaiting != "confirmation"

    async def offered_tools(self, ctx: OperatorContext) -> list[OfferedTool]:
        """The tools the policy allows the LLM planner (and the config names) that a connector offers."""
        if self._offered is not None:
            return self._offered
        cfg: LlmPlanConfig = self.config  # type: ignore[assignment]
        policy = self._policy
        assert policy is not None
        allowed = policy.planners.get(LLM_PLANNER, [])
        names = [n for n in (cfg.tools if cfg.tools is not None else allowed) if n in allowed and n != VERIFY_TOOL]
        offered: list[OfferedTool] = []
        for name in dict.fromkeys(names):
            tool = await ctx.tools.get(name) if ctx.tools is not None else None
            model = arguments_model(tool)
            if tool is None or model is None:
                log.info("llm_plan: %s is not offered (no connector, or no argument model to check calls by)", name)
                continue
            writes = name in policy.write_tools or name not in policy.read_tools or bool(getattr(tool, "writes", True))
            offered.append(OfferedTool(name, writes, str(getattr(tool, "description", "")), model))
        if ctx.tools is not None:
            self._offered = offered  # a registry that could not load yet is asked again next turn
        return offered

    async def run(self, record: PlannedTurn, ctx: OperatorContext) -> PlannedTurn:
        if not self._warmed:
            self.warm_up(ctx)
        cfg: LlmPlanConfig = self.config  # type: ignore[assignment]
        if self._model is None or self._prompt is None or not self.wants(record):
            return record
        offered = await self.offered_tools(ctx)
        messages = render_plan_prompt(self._prompt, record, cfg)
        answer = await self._model.chat(cfg.tiers, messages, tools=[t.spec() for t in offered])
        if answer is None:
            TURNS.labels("no_tier").inc()
            return record
        if answer.truncated:  # cut by the token budget: half an answer is no plan
            TURNS.labels("truncated").inc()
            return self._spent(record, answer)
        orders = known_orders(record)
        parsed = parse_tool_calls(answer.tool_calls, offered, max_steps=cfg.max_steps, known_orders=orders)
        if parsed.dropped:
            log.info("llm_plan: %s dropped %s", record.message.message_id, dict(parsed.reasons))
        plan = self._plan(record, parsed, usable_text(answer, cfg.max_reply_chars), answer)
        if plan is None:
            TURNS.labels("nothing_usable").inc()
            return self._spent(record, answer)
        TURNS.labels("planned").inc()
        return plan

    @staticmethod
    def _spent(record: PlannedTurn, answer: LlmAnswer) -> PlannedTurn:
        """The turn as `plan` made it, with what the unusable answer cost (the turn's event records it)."""
        return record.model_copy(update={"plan": record.plan.model_copy(update={"llm": usage_of(answer)})})

    def _plan(self, record: PlannedTurn, parsed: Parsed, text: str | None, answer: LlmAnswer) -> PlannedTurn | None:
        session = record.session.model_copy(deep=True)
        task_id = record.message.message_id
        calls = [
            ActionCall(name=a.tool.name, arguments=a.arguments, writes=a.tool.writes,
                       idempotency_key=idempotency_key(task_id, a.tool.name, a.arguments))
            for a in parsed.accepted
        ]  # fmt: skip
        reads = [c for c in calls if not c.writes]
        writes = [c for c in calls if c.writes]
        order = next((str(c.arguments["order_number"]) for c in [*writes, *reads] if "order_number" in c.arguments),
                     None)  # fmt: skip
        if writes and not session.verified and order is None:
            for call in writes:  # the identity check needs an order number the customer gave
                parsed.drop(call.name, "unverifiable")
            writes = []
        base: dict[str, Any] = {"planner": LLM_PLANNER, "intent": record.plan.intent, "llm": usage_of(answer)}
        if writes:
            slots = {"actions": "; ".join(describe(w) for w in writes)}
            if order is not None:
                slots["order_number"] = order
            task = TaskState(task_id=task_id, intent=record.plan.intent, slots=slots, planner=LLM_PLANNER,
                             steps=reads, pending_steps=writes, started_at=record.message.received_at)  # fmt: skip
            session.task = task
            if session.verified:
                task.awaiting = "confirmation"
                plan = Plan(**base, steps=reads, pending_steps=writes, reply_template=LLM_CONFIRM,
                            reply_variables=slots, awaiting="confirmation")  # fmt: skip
            else:
                task.awaiting = "verification"
                plan = Plan(**base, reply_template=VERIFY_ASK, reply_variables=slots, awaiting="verification")
            return PlannedTurn(**{**dict(record), "session": session, "plan": plan})
        if not reads and text is None:
            return None
        template = record.plan
        session.task = None
        if text is None:  # reads without words: the template's reply, which `compose` may rewrite from the results
            plan = Plan(**base, steps=reads, reply_template=template.reply_template,
                        reply_variables=template.reply_variables, knowledge=template.knowledge)  # fmt: skip
        else:
            plan = Plan(**base, steps=reads, reply_template=escape(text), reply_variables=template.reply_variables,
                        fallback_template=template.reply_template, knowledge=template.knowledge)  # fmt: skip
        return PlannedTurn(**{**dict(record), "session": session, "plan": plan})


def arguments_model(tool: Any) -> type[BaseModel] | None:
    """The pydantic model a tool checks its arguments with (a commerce tool's `Arguments`, a REST tool's
    `arguments_model`), through a wrapper (`AnnouncingTool.inner`); None when it has none."""
    inner = getattr(tool, "inner", tool)
    for attribute in ("Arguments", "arguments_model"):
        model = getattr(inner, attribute, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
    return None
