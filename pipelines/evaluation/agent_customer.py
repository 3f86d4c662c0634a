"""The tasks of `supportflow eval agent` and the simulated customer who pursues them.

Tasks are data (`pipelines/evaluation/data/agent_tasks/*.yaml`, see the README there): a seeded
customer, what they want and know, the tool calls that should happen, the escalation reason that
would be right, and the facts the replies must carry. The customer's words come from a phrasing
bank written for this evaluation (`data/customer_phrasings.yaml`), composed per trial by a seeded
generator, so trial n of a task always reads the same and different trials read differently.

The simulated customer reads what the agent is asking for by its meaning (an order number, the
email or ZIP, a yes/no, the items, an address), from cues a person would recognise in any
wording, not from the playbooks' sentences; asked the same thing again, it answers again.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).parent / "data"
TASKS_DIR = DATA_DIR / "agent_tasks"
PHRASINGS = DATA_DIR / "customer_phrasings.yaml"
MAX_ASKS = 3  # the same question a fourth time: a person gives up, and so does the simulation


@dataclass(frozen=True)
class Request:
    intent: str
    order: str | None = None
    items: str | dict[str, Any] | None = None  # "all" or {say, qty}
    address: str | None = None
    changes: str | None = None  # change_order: "remove the soap", "candle to 2"
    replacement: str | None = None  # exchange_items: "the same", "size 42"
    confirm: str = "yes"  # yes | no | change_of_mind
    identity: str = "right"  # right | wrong: the customer misremembers the ZIP or email on the account


@dataclass(frozen=True)
class Task:
    id: str
    customer: str
    requests: tuple[Request, ...]
    calls: tuple[dict[str, Any], ...]
    escalation: tuple[str, ...] = ()
    must_say: tuple[str, ...] = ()
    must_not_say: tuple[str, ...] = ()
    together: bool = False
    source: str = ""

    @property
    def playbook(self) -> str:
        """The group a task is reported under: its file (a playbook, `escalation` or `multi`)."""
        return self.source


def load_tasks(folder: Path = TASKS_DIR) -> list[Task]:
    """Every task of the folder; a customer used twice is an error (tasks of a round share one backend)."""
    tasks: list[Task] = []
    for path in sorted(folder.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            expected = raw.get("expected") or {}
            tasks.append(
                Task(
                    id=raw["id"],
                    customer=raw["customer"],
                    requests=tuple(Request(**r) for r in raw["requests"]),
                    calls=tuple(expected.get("calls") or ()),
                    escalation=tuple(expected.get("escalation") or ()),
                    must_say=tuple(raw.get("must_say") or ()),
                    must_not_say=tuple(raw.get("must_not_say") or ()),
                    together=bool(raw.get("together", False)),
                    source=path.stem,
                )
            )
    seen: dict[str, str] = {}
    for t in tasks:
        for key, kind in ((t.id, "id"), (t.customer, "customer")):
            if f"{kind}:{key}" in seen:
                raise ValueError(f"{kind} {key} is used by both {seen[f'{kind}:{key}']} and {t.id}")
            seen[f"{kind}:{key}"] = t.id
    return tasks


@cache
def phrasing_bank(path: Path = PHRASINGS) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def bank_sentences(bank: dict[str, Any]) -> list[str]:
    """Every phrasing of the bank, flattened (for the overlap check against training data)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(bank)
    return out


_PROTECTED = re.compile(r"[\d@#{}]")


def add_typo(text: str, rng: random.Random) -> str:
    """One slip of the fingers in one longer word; numbers, emails and placeholders stay intact."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and not _PROTECTED.search(w)]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif kind == "drop":
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def misremembered(value: str) -> str:
    """A detail one slip away from the real one: a ZIP's last digit moved on by one, an email's name doubled."""
    if value.isdigit():
        return value[:-1] + str((int(value[-1]) + 1) % 10)
    name, at, domain = value.partition("@")
    return f"{name}{name[-1:]}{at}{domain}"


@dataclass(frozen=True)
class Style:
    """How the customer writes in one trial: drawn once from the trial's seed."""

    greet: bool
    details: str  # with_order | without_order | with_identity
    typo: bool
    identity: str  # zip | email
    side_question: bool


def trial_seed(task_id: str, trial: int, seed: int) -> int:
    # a stable hash: Python's own hash() of a str changes per process
    return int.from_bytes(f"{seed}:{task_id}:{trial}".encode(), "little") % (2**61 - 1)


def draw_style(rng: random.Random) -> Style:
    return Style(
        greet=rng.random() < 0.5,
        details=rng.choices(("with_order", "without_order", "with_identity"), (55, 30, 15))[0],
        typo=rng.random() < 0.4,
        identity=rng.choice(("zip", "email")),
        side_question=rng.random() < 0.25,
    )


# What the agent is asking for, by meaning, read from its questions only (a sentence ending in "?"
# or a request such as "please tell me…"), so a statement that mentions an order number or an
# email is not taken for a question. Checked in this order: a confirmation names the order too,
# "which order should go to a new address?" asks for the order, an address question may spell out a
# ZIP, and an identity question names the order it is about.
_ASKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "confirm",
        re.compile(
            r"\b(yes or no|shall i|should i|go ahead|do you want me to|would you like me to|ok(ay)? to proceed|"
            r"can you confirm|please confirm|is that (right|correct))\b",
            re.I,
        ),
    ),
    (
        "replacement",
        re.compile(
            r"\b(send|ship)( you)? instead\b|\binstead\?|\b(which|what) (size|colou?r|variant)\b|"
            r"\bwhat (would you like|do you want) (in exchange|instead)\b",
            re.I,
        ),
    ),
    (
        "changes",
        re.compile(
            r"\bwhat (should|would you like to|do you want to|shall i) (change|add or remove)\b|"
            r"\bwhich changes\b|\bwhat changes\b",
            re.I,
        ),
    ),
    ("items", re.compile(r"\b(which|what) (items?|products?|things?|articles?)\b|\bname them\b", re.I)),
    (
        "order_number",
        re.compile(
            r"\border (number|no\.?|#|id)\b|\bwhich order\b|\b7-digit\b|\bcheck the number\b"
            r"|\bwhat(?:'s| is) the order\b",
            re.I,
        ),
    ),
    ("address", re.compile(r"\b(new|delivery|shipping) address\b|\bwhere should (it|the order) go\b", re.I)),
    (
        "identity",
        re.compile(
            r"\b(e-?mail( address)?|zip( code)?|post(al)? ?code|verify|prove who|confirm (that )?it'?s you)\b", re.I
        ),
    ),
)
_SENTENCE = re.compile(r"[^.?!]+[.?!]*")
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e)\.", re.I)
_REQUEST = re.compile(
    r"\?\s*$|\b(please (tell|give|send|share|write|type|enter|confirm)|could you|would you|tell me|give me|"
    r"let me know|i need)\b",
    re.I,
)


def asked_for(reply: str) -> str | None:
    """The slot the agent's reply asks for, or None when it asks nothing (the request is answered)."""
    reply = _ABBREVIATION.sub("for example", reply)  # "(e.g. 'size 43')?" does not end the question early
    questions = " ".join(s for s in _SENTENCE.findall(reply) if _REQUEST.search(s.strip()))
    if not questions:
        return None
    for slot, pattern in _ASKS:
        if pattern.search(questions):
            return slot
    return None


# Words that show a reply is about this kind of request, to tell which of two requests it answers.
_ABOUT = {
    "track_order": re.compile(r"\b(pending|processing|shipped|delivered|cancelled|returned|tracking)\b", re.I),
    "track_refund": re.compile(r"\brefund", re.I),
    "get_refund": re.compile(r"\brefund", re.I),
    # a refusal answers too: "it has already shipped" is an answer to "cancel it" or "send it elsewhere"
    "cancel_order": re.compile(r"\bcancel|\b(shipped|delivered)\b", re.I),
    "change_shipping_address": re.compile(r"\baddress\b|\bwill go to\b|\b(shipped|delivered)\b", re.I),
    "change_order": re.compile(r"\bchang|\bupdated\b|\btotal\b|\b(processing|shipped|delivered)\b", re.I),
    "return_items": re.compile(r"\breturn|\brefund|\bwindow\b|\bdelivered\b", re.I),
    "exchange_items": re.compile(r"\bexchang|\breplacement\b|\bwindow\b|\bdelivered\b", re.I),
}


# Requests whose change the agent confirms first, and those of them that pay money back.
_CONFIRMED = frozenset(
    {"cancel_order", "change_shipping_address", "get_refund", "change_order", "return_items", "exchange_items"}
)
_MONEY_BACK = frozenset({"cancel_order", "get_refund", "return_items"})


@dataclass
class SimulatedCustomer:
    """One trial of one task: says the opening, then answers what the agent asks, request by request."""

    task: Task
    facts: dict[str, str]  # zip, email of the customer, from the seed
    trial: int
    seed: int = 0
    rng: random.Random = field(init=False)
    style: Style = field(init=False)
    current: int = 0
    asked: dict[tuple[int, str], int] = field(default_factory=dict)
    pending_resume: bool = False
    side_asked: bool = False
    mentioned: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    restated: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(trial_seed(self.task.id, self.trial, self.seed))
        self.style = draw_style(self.rng)
        self.bank = phrasing_bank()
        # where the side question comes: drawn apart, so the words of trials drawn before this existed stay
        self.side_at_confirm = random.Random(trial_seed(self.task.id, self.trial, self.seed) + 1).random() < 0.5

    def _pick(self, options: list[str]) -> str:
        return self.rng.choice(options)

    def _fill(self, template: str, request: Request) -> str:
        items = request.items
        item = items.get("say", "") if isinstance(items, dict) else "stuff"
        qty = str(items.get("qty", 1)) if isinstance(items, dict) else "1"
        return template.format(
            order=request.order or "",
            zip=self.facts.get("zip", ""),
            email=self.facts.get("email", ""),
            item=item,
            qty=qty,
            address=request.address or "",
            changes=request.changes or "",
            replacement=request.replacement or "",
            request="",
        )

    def _style_text(self, text: str, first: bool) -> str:
        if self.style.typo:
            text = add_typo(text, self.rng)
        if first and self.style.greet:
            text = f"{self._pick(self.bank['greetings'])} {text}"
        return text

    def _opening_of(self, request: Request) -> str:
        openings = self.bank["openings"][request.intent]
        kind = self.style.details if request.order else "with_order"
        if kind not in openings:
            kind = "with_order"
        return self._fill(self._pick(openings[kind]), request)

    def _short(self, request: Request) -> str:
        return self._fill(self._pick(self.bank["requests"][request.intent]), request)

    def opening(self) -> str:
        first = self.task.requests[0]
        text = self._opening_of(first)
        self.mentioned.add(0)
        if self.task.together and len(self.task.requests) > 1:
            text = self._pick(self.bank["two_in_one"]).format(first=text, second=self._short(self.task.requests[1]))
            self.mentioned.add(1)
        return self._style_text(text, first=True)

    def _answer(self, slot: str, request: Request) -> str | None:
        answers = self.bank["answers"]
        if slot == "confirm":
            key = {"yes": "yes", "no": "no", "change_of_mind": "change_of_mind"}[request.confirm]
            return self._pick(answers[key])
        if slot == "identity":
            answer = self._fill(self._pick(answers[self.style.identity]), request)
            if request.identity == "wrong":
                # the customer misremembers: the ZIP or email they give is not the one on the account
                for fact in ("zip", "email"):
                    if self.facts.get(fact):
                        answer = answer.replace(self.facts[fact], misremembered(self.facts[fact]))
            return answer
        if slot == "order_number":
            return self._fill(self._pick(answers["order_number"]), request) if request.order else None
        if slot == "items":
            if request.items == "all":
                return self._pick(answers["items_all"])
            return self._fill(self._pick(answers["items"]), request) if request.items else None
        if slot == "address":
            return self._fill(self._pick(answers["address"]), request) if request.address else None
        if slot == "changes":
            return self._fill(self._pick(answers["changes"]), request) if request.changes else None
        if slot == "replacement":
            return self._fill(self._pick(answers["replacement"]), request) if request.replacement else None
        return None

    def _answered(self, reply: str) -> int | None:
        """Which open request a reply that asks nothing answers: its order number and its subject.

        A reply naming the order but about something else (delivery times in general) answers nothing:
        the customer asks again.
        """
        open_ = [i for i, r in enumerate(self.task.requests) if i not in self.done]
        named = [i for i in open_ if self.task.requests[i].order and self.task.requests[i].order in reply]
        for i in named:
            about = _ABOUT.get(self.task.requests[i].intent)
            if about is None or about.search(reply):
                return i
        if open_ and not self.task.requests[open_[0]].order:
            return open_[0]  # a request with no order to name (a human, a question): any answer ends it
        return None

    def respond(self, reply: str) -> str | None:
        """The next message after the agent's reply, or None: the customer has nothing more to say."""
        if self.current >= len(self.task.requests):
            return None
        request = self.task.requests[self.current]
        slot = asked_for(reply)
        if slot is None:
            answered = self._answered(reply)
            if answered is None:
                # the agent said something else (a general answer, the side question's answer): a
                # customer restates what they came for, once per request (and after their own detour)
                if self.pending_resume or self.current not in self.restated:
                    if not self.pending_resume:
                        self.restated.add(self.current)
                    self.pending_resume = False
                    return self._pick(self.bank["resume"]).format(request=self._short(request))
                self.done.add(self.current)
            else:
                self.done.add(answered)
            rest = [i for i in range(len(self.task.requests)) if i not in self.done]
            if not rest:
                self.current = len(self.task.requests)
                return None
            self.current = rest[0]
            return self._pick(self.bank["follow_ups"]).format(second=self._short(self.task.requests[self.current]))
        self.pending_resume = False
        if self.style.side_question and not self.side_asked:
            at_confirm = self.side_at_confirm and request.intent in _CONFIRMED
            if at_confirm and slot == "confirm":
                self.side_asked = True
                self.pending_resume = True
                money_back = request.intent in _MONEY_BACK
                asks = [q for q in self.bank["side_questions_at_confirm"] if money_back or "get back" not in q]
                return self._pick(asks)
            if not at_confirm and slot in ("identity", "order_number"):
                self.side_asked = True
                self.pending_resume = True
                return self._pick(self.bank["side_questions"])
        key = (self.current, slot)
        self.asked[key] = self.asked.get(key, 0) + 1
        if self.asked[key] > MAX_ASKS:
            return None
        answer = self._answer(slot, request)
        if answer is None:
            return None
        if self.asked[key] > 1:
            answer = self._pick(self.bank["answers"]["again"]) + answer
        return answer


def customer_facts(customer_ids: set[str]) -> dict[str, dict[str, str]]:
    """ZIP and email of the given customers, as the demo seed writes them (`supportflow seed` defaults)."""
    from connectors.backends.commerce.seed import generate

    data = generate()
    return {row[0]: {"email": row[2], "zip": row[4]} for row in data.customers if row[0] in customer_ids}


__all__ = [
    "Request",
    "SimulatedCustomer",
    "Style",
    "Task",
    "add_typo",
    "asked_for",
    "bank_sentences",
    "customer_facts",
    "load_tasks",
    "misremembered",
    "phrasing_bank",
]
