"""answer: answer a turn from the passages `retrieve` attached, quoting the article and citing it, or hand it over.

It follows `retrieve` and takes the turns that carry `Plan.knowledge` (a templated question, or a side
question asked mid-task); every other turn passes untouched. `retrieve`'s calibrated confidence decides:

- good enough (`KnowledgeUse.answerable`): the reply is **extractive**, the sentences of the best article's
  passages closest in meaning to the question, kept in the article's order and shortened to the channel's
  limit, with the article cited in the channel's style: its title and link where a link can be followed
  (web chat, the apps, email, Slack, Teams), its title alone where it cannot or would cost a segment (SMS,
  WhatsApp, voice). Nothing is generated: every word of the answer is the article's.
- not good enough: the turn takes the `human` branch (to `escalate`) with the passages in the plan, which
  the escalation carries, so the human starts from them; no answer is made up. With `gaps_to_reply`, it
  takes `reply` instead, for a planner after it (`llm_plan`) to try first.

A side question asked in the middle of a playbook task ("before that - how long do refunds take?", which `plan`
answers from its template and marks as `Plan.aside`) gets the same extractive, cited answer in the template's
place, with the task's own question after it; when the knowledge base cannot answer it, the template's answer
stays and the task goes on: never a hand-over mid-task.

The closest sentences are found with the knowledge base's embedder (`ctx.clients`); without one (no store
configured) the template reply stays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from typing import ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import KnowledgeOptions, KnowledgeRetriever, OperatorContext
from operators.retrieve import KNOWLEDGE_TURNS, TEMPLATE_PLANNER, looked_up_as
from schemas import KnowledgeUse, PlannedTurn
from schemas.knowledge import Passage

log = logging.getLogger(__name__)

PLANNER = "knowledge-v1"
# a link can be followed here; elsewhere the title alone is cited (SMS and WhatsApp would spend a
# segment's worth of characters on a URL, and a voice caller cannot click one)
LINK_CHANNELS = frozenset({"webchat", "mobile", "api", "email", "slack", "teams"})

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(“]?[A-Z0-9])")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")
ELLIPSIS = "..."
# typography outside the GSM-7 alphabet turns a whole SMS into UCS-2, with 67 characters a segment
# instead of 153; these have plain equivalents
SMS_PLAIN = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "...", "•": "*"})


def knowledge_gap(turn: PlannedTurn) -> bool:
    """A turn only a human (or a planner) can take: the knowledge base fell short, or an out-of-scope message
    was not looked up (the store failed), which goes to a human as it did before `route` let it through."""
    knowledge = turn.plan.knowledge
    if knowledge is None:
        return turn.route.reason == "out_of_scope" and turn.plan.planner == TEMPLATE_PLANNER
    return not knowledge.answered


class AnswerConfig(OperatorConfig):
    model_name: str = Field(
        default="text_embedder",
        description="the embedder that finds the sentences closest to the question (triton_models/<model_name>)",
    )
    max_chars: dict[str, int] = Field(
        default_factory=lambda: {"sms": 306, "whatsapp": 700, "voice": 400, "email": 1200, "default": 700},
        description="longest reply per channel, citation included ('default' for the rest)",
    )
    max_sentences: int = Field(default=3, ge=1, le=10)
    word_weight: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="how much a sentence's share of the question's rarer words adds to its cosine when choosing "
        "what to quote (`word_overlap`); 0: meaning alone",
    )
    timeout_s: float = Field(default=5.0, gt=0, description="longest choosing the sentences may take for one turn")
    skip_intents: list[str] = Field(
        default_factory=lambda: ["contact_human_agent"], description="intents whose template always stands"
    )
    gaps_to_reply: bool = Field(
        default=False,
        description="a knowledge gap takes the `reply` branch too, for the planner after `answer` (`llm_plan`) to "
        "try; that planner hands over what it cannot plan. False: gaps go to a human here",
    )


class Answer(Operator[PlannedTurn, PlannedTurn]):
    """Replace a template reply by an extractive, cited answer; send the turn to a human when none is good enough."""

    name = "answer"
    input_type = PlannedTurn
    output_type = PlannedTurn
    branches = ("reply", "human")
    Config: ClassVar[type[OperatorConfig]] = AnswerConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._knowledge: KnowledgeRetriever | None = None
        self._warmed = False

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: AnswerConfig = self.config  # type: ignore[assignment]
        self._warmed = True
        if ctx.clients is None:
            return
        try:
            self._knowledge = ctx.clients.knowledge_retriever(KnowledgeOptions(model_name=cfg.model_name))
        except (OSError, ImportError, ValueError) as exc:  # no exported embedder: the templates answer
            log.error("answer: no embedder for the knowledge base (%s); replies come from the templates", exc)

    def choose_branch(self, output: PlannedTurn) -> str:
        cfg: AnswerConfig = self.config  # type: ignore[assignment]
        if cfg.gaps_to_reply:  # a planner after `answer` tries the gaps first and hands over what it cannot plan
            return "reply"
        return "human" if knowledge_gap(output) else "reply"

    async def run(self, record: PlannedTurn, ctx: OperatorContext) -> PlannedTurn:
        if not self._warmed:
            self.warm_up(ctx)
        cfg: AnswerConfig = self.config  # type: ignore[assignment]
        plan, use = record.plan, record.plan.knowledge
        kind = looked_up_as(plan, cfg.skip_intents)
        if use is None or use.answered or kind is None:
            return record
        rest = plan.reply_template[len(plan.aside) :] if kind == "aside" and plan.aside is not None else ""
        try:
            found = await self._quote(record, use, reserve=len(rest)) if use.answerable else None
        except Exception as exc:  # the embedder is down or slow: as if the knowledge base were, the template stands
            log.warning("answer: could not choose sentences for %s (%s: %s)", record.message.message_id,
                        type(exc).__name__, exc)  # fmt: skip
            KNOWLEDGE_TURNS.labels("unavailable").inc()
            return record.model_copy(update={"plan": plan.model_copy(update={"knowledge": None})})
        if kind == "aside":
            return self._answer_aside(record, found, rest)
        if found is None:
            KNOWLEDGE_TURNS.labels("handed_over").inc()
            return record
        KNOWLEDGE_TURNS.labels("answered").inc()
        answer, answered = found
        # the plan's reply is a template (`execute` fills {fields} and drops [segments]): the article's
        # own braces and brackets must come through as written
        template = answer.replace("{", "{{").replace("}", "}}")
        update = {"planner": PLANNER, "reply_template": template, "reply_variables": {}, "knowledge": answered}
        return record.model_copy(update={"plan": plan.model_copy(update=update)})

    @staticmethod
    def _answer_aside(record: PlannedTurn, found: tuple[str, KnowledgeUse] | None, rest: str) -> PlannedTurn:
        """A side question asked mid-task ("before that - how long do refunds take?"): the knowledge base's
        answer in place of the template's, the task's own question (`rest`) after it as before. The task goes
        on either way: a question the knowledge base cannot answer keeps its template, never a hand-over."""
        plan = record.plan
        if found is None:
            KNOWLEDGE_TURNS.labels("kept_template").inc()
            # not a gap: the task's turn goes on as `plan` made it
            return record.model_copy(update={"plan": plan.model_copy(update={"knowledge": None})})
        KNOWLEDGE_TURNS.labels("answered").inc()
        answer, answered = found
        quoted = answer.replace("{", "{{").replace("}", "}}")
        # the task's question keeps its {placeholders}: only the quoted answer is escaped
        update = {"reply_template": f"{quoted} {rest.lstrip()}", "aside": quoted, "knowledge": answered}
        return record.model_copy(update={"plan": plan.model_copy(update=update)})

    async def _quote(self, record: PlannedTurn, use: KnowledgeUse, reserve: int = 0) -> tuple[str, KnowledgeUse] | None:
        """The cited answer and the knowledge use that records it; None when the passages hold nothing to quote.
        Raises when the embedder cannot choose the sentences (none configured, down, slow)."""
        if self._knowledge is None:
            raise LookupError("no embedder for the knowledge base is configured")
        cfg: AnswerConfig = self.config  # type: ignore[assignment]
        composed = await asyncio.wait_for(self._compose(record, use, reserve), cfg.timeout_s)
        if composed is None:
            return None
        text, citation, cited = composed
        return text, use.model_copy(update={"answered": True, "cited": [cited.doc_id], "citation": citation})

    async def _compose(
        self, record: PlannedTurn, use: KnowledgeUse, reserve: int = 0
    ) -> tuple[str, str, Passage] | None:
        """The reply, its citation and the passage it cites, or None when the passages hold no sentence to quote.

        `reserve`: characters of the channel's limit that text after the answer will take."""
        cfg: AnswerConfig = self.config  # type: ignore[assignment]
        assert self._knowledge is not None
        if not use.passages:
            return None
        best = use.passages[0]
        # the best article only (sentences of two articles under one citation would misquote one), and all of
        # it: the retrieved passages are the chunks the question matched best, which can be a side note ("a
        # refund above the limit is paid once approved, within 1 business day") while the answer itself, a
        # table of timelines, sits in a chunk of the same article that ranked lower or not at all
        same_article = await self._knowledge.article(best.doc_id) or [
            p for p in use.passages if p.doc_id == best.doc_id
        ]
        sentences = [s for p in same_article for s in sentences_of(p.text)]
        if not sentences:
            return None
        channel = record.message.channel
        citation = cite(best, channel)
        if channel == "sms":  # before measuring: "…" becomes three characters
            sentences = [s.translate(SMS_PLAIN) for s in sentences]
            citation = citation.translate(SMS_PLAIN)
        limit = cfg.max_chars.get(channel, cfg.max_chars.get("default", 700))
        budget = limit - len(citation) - 1 - reserve
        meaning = await self._knowledge.similarities(use.query, sentences)
        words = word_overlap(use.query, sentences, self._knowledge.terms)
        scores = [m + cfg.word_weight * w for m, w in zip(meaning, words, strict=True)]
        text = extract(sentences, scores, budget, cfg.max_sentences)
        if not text:
            return None
        return f"{text} {citation}", citation, best


def cite(passage: Passage, channel: str) -> str:
    """The source in the channel's style: title and link where a link can be followed, else the title."""
    title = plain(passage.title)
    if passage.url and channel in LINK_CHANNELS:
        return f"Source: {title} ({passage.url})"
    return f"(Source: {title})"


def plain(text: str) -> str:
    """Markdown inline markup out: link texts kept, emphasis and code marks dropped, brackets made round."""
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\2", text)
    return " ".join(text.replace("[", "(").replace("]", ")").split())


def sentences_of(markdown: str) -> list[str]:
    """A chunk's Markdown as quotable sentences: headings dropped, list items and table rows made sentences."""
    found: list[str] = []
    header: list[str] | None = None
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            found.extend(s for s in _SENTENCE_END.split(plain(" ".join(paragraph))) if s)
            paragraph.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            flush()
            if _TABLE_RULE.match(stripped):
                continue
            cells = [plain(c) for c in stripped.strip("|").split("|")]
            if header is None:
                header = cells
                continue
            found.append(table_row(header, cells))
            continue
        header = None
        if not stripped or stripped.startswith("#"):
            flush()
            continue
        if _LIST_MARK.match(stripped):
            flush()
            item = plain(_LIST_MARK.sub("", stripped))
            found.extend(s for s in _SENTENCE_END.split(item) if s)
            continue
        paragraph.append(stripped)
    flush()
    return [s if s.endswith((".", "!", "?", ":")) else f"{s}." for s in (s.strip() for s in found) if len(s) > 2]


def table_row(header: list[str], cells: list[str]) -> str:
    """A row under its column names: 'Debit card - Refund goes to: The same card; Shows within: 5 days'.

    The names make a row a sentence on its own, one the question's words and meaning can match.
    """
    first, rest = cells[0], [(h, c) for h, c in zip(header[1:], cells[1:], strict=False) if c]
    if not rest:
        return first
    return f"{first} - " + "; ".join(f"{h}: {c}" if h else c for h, c in rest)


def word_overlap(query: str, sentences: list[str], terms: Callable[[str], list[str]]) -> list[float]:
    """Each sentence's share of the question's words (stemmed, stop words out), each word weighted by how rare
    it is among these sentences (idf): 1.0 when a sentence has them all.

    Meaning alone blurs a short question: "and with PayPal? (how long do refunds take)" is about as close to
    the article's general sentences as to its PayPal row; the rare word the customer typed tells them apart,
    as it does for the retriever's lexical side.
    """
    asked = set(terms(query))
    if not asked or not sentences:
        return [0.0] * len(sentences)
    bags = [set(terms(s)) & asked for s in sentences]
    idf = {t: math.log(1 + len(sentences) / (1 + sum(t in b for b in bags))) for t in asked}
    total = sum(idf.values())
    return [sum(idf[t] for t in b) / total for b in bags]


def extract(sentences: list[str], scores: list[float], budget: int, max_sentences: int) -> str:
    """The sentences closest to the question that fit `budget` characters, in the article's order.

    The closest sentence leads; a sentence beside one already chosen joins while it stays within 0.2
    cosine of it (it is the closest one's context), any other only within 0.08 (so an answer does not
    run on into the article's other topics). A closest sentence longer than the budget is cut at a
    word, with an ellipsis.
    """
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    top = ranked[0]
    if len(sentences[top]) > budget:
        room = budget - len(ELLIPSIS)
        head = sentences[top][: max(0, room + 1)]  # one character more tells whether the cut falls between words
        cut = head.rsplit(" ", 1)[0].rstrip(",;: ") if " " in head else ""
        return f"{cut}{ELLIPSIS}" if cut else ""
    chosen = {top}
    used = len(sentences[top])
    for i in ranked[1:]:
        if len(chosen) >= max_sentences:
            break
        beside = i - 1 in chosen or i + 1 in chosen
        close = scores[i] >= scores[top] - (0.2 if beside else 0.08)
        if close and used + 1 + len(sentences[i]) <= budget:
            chosen.add(i)
            used += 1 + len(sentences[i])
    return " ".join(sentences[i] for i in sorted(chosen))
