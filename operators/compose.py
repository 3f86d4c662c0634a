"""compose: the grounded reply. A small language model rewrites the agent's reply from the turn's sources.

It follows `execute` (before `guard`) and takes the turns whose plan a configured planner made (by default the
knowledge base's answers, `knowledge-v1`, and the LLM planner's, `llm-plan-v1`); a playbook's reply, a failed
action's reply and every turn without a language model pass untouched: the cascade's rule that a known task
needs no LLM. The model gets the customer's message, the sources (the cited passages and the tool results, as
labelled untrusted data) and the reply the template path wrote, and is asked for a natural answer with the
same facts, in the channel's length. The article's citation is kept as `answer` wrote it, after the text.

Web chat shows the reply as it is generated (`ctx.clients.reply_stream`), but only sentence by sentence as each
passes the checks `guard` applies (`CheckedSink`): a customer never watches an ungrounded sentence appear.

The generated text is only a proposal: `Reply.fallback_text` keeps the non-LLM reply and `Reply.sources` the
texts it may draw on, and `guard` sends the fallback when the generated one states a number, link or action its
sources do not (`operators/policy/grounding.py`), or leaks PII. No tier answering (down, slow, over budget)
leaves the non-LLM reply in place. Tiers are tried in `tiers` order (`supportflow` settings `llm_tiers` say
where each is served); the turn's event records the tier, tokens and cost.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import ClassVar

from prometheus_client import Counter
from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.llm import load_prompt, untrusted
from operators.policy import check_grounding, check_reply_pii
from operators.protocols import LanguageModel, LlmAnswer, OperatorContext, TokenSink
from schemas import ExecutedTurn, LlmUsage, Reply

log = logging.getLogger(__name__)

COMPOSED = Counter(
    "supportflow_compose_turns_total",
    "Turns compose saw, by outcome (generated, no_tier: no model answered, too_long, skipped).",
    ["outcome"],
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class ComposeConfig(OperatorConfig):
    tiers: list[str] = Field(default_factory=lambda: ["small", "large"], description="tried in this order")
    prompt: str = Field(default="compose.v1", description="operators/llm/prompts/<prompt>.yaml")
    planners: list[str] = Field(
        default_factory=lambda: ["knowledge-v1", "llm-plan-v1"], description="whose plans' replies are rewritten"
    )
    max_chars: dict[str, int] = Field(
        default_factory=lambda: {"sms": 306, "whatsapp": 700, "voice": 400, "email": 1200, "default": 700},
        description="longest reply per channel, citation included ('default' for the rest)",
    )
    stream_channels: list[str] = Field(
        default_factory=lambda: ["webchat"], description="channels that see the reply as it is generated"
    )


def usage_of(answer: LlmAnswer) -> LlmUsage:
    return LlmUsage(
        tier=answer.tier,
        model=answer.model,
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
        cost_usd=answer.cost_usd,
        cached=answer.cached,
        latency_ms=answer.latency_ms,
        fell_back_from=[f"{f.tier}: {f.reason}" for f in answer.failures],
    )


def sources_of(turn: ExecutedTurn) -> list[str]:
    """What a generated reply may state: the quoted passages and the tool results (the customer's own words
    are added by `guard`, which reads the session)."""
    sources: list[str] = []
    knowledge = turn.plan.knowledge
    if knowledge is not None and knowledge.answered:
        cited = [p for p in knowledge.passages if p.doc_id in knowledge.cited] or knowledge.passages
        sources += [f"{p.title}\n{p.text}" for p in cited]
    sources += [
        json.dumps({"tool": r.name, "status": r.status, "result": r.result}, ensure_ascii=False, default=str)
        for r in turn.results
        if r.status == "succeeded"
    ]
    return sources


def fit(text: str, limit: int) -> str | None:
    """`text` within `limit` characters, cut after a whole sentence; None when not even one fits."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    kept = ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    return kept or None


class Compose(Operator[ExecutedTurn, ExecutedTurn]):
    """Rewrite the reply with a language model from the turn's sources; the non-LLM reply stays as fallback."""

    name = "compose"
    input_type = ExecutedTurn
    output_type = ExecutedTurn
    Config: ClassVar[type[OperatorConfig]] = ComposeConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._model: LanguageModel | None = None
        self._warmed = False

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: ComposeConfig = self.config  # type: ignore[assignment]
        self._warmed = True
        self._prompt = load_prompt(cfg.prompt)
        self._model = ctx.clients.language_model() if ctx.clients is not None else None
        if self._model is not None:
            unknown = [t for t in cfg.tiers if t not in self._model.tier_names]
            if unknown:
                log.warning("compose: tiers %s are not configured (llm_tiers has %s)", unknown, self._model.tier_names)

    async def run(self, record: ExecutedTurn, ctx: OperatorContext) -> ExecutedTurn:
        if not self._warmed:
            self.warm_up(ctx)
        cfg: ComposeConfig = self.config  # type: ignore[assignment]
        if (
            self._model is None
            or record.plan.planner not in cfg.planners
            or record.plan.awaiting is not None  # a question the next turn answers (a confirmation) stays as written
            or any(r.status == "failed" for r in record.results)
        ):
            return record
        draft = record.reply.text
        knowledge = record.plan.knowledge
        citation = knowledge.citation if knowledge is not None and knowledge.answered else ""
        body = draft[: -len(citation)].rstrip() if citation and draft.endswith(citation) else draft
        channel = record.message.channel
        limit = cfg.max_chars.get(channel, cfg.max_chars.get("default", 700)) - (len(citation) + 1 if citation else 0)
        sources = sources_of(record)
        messages = self._prompt.render(
            channel=channel,
            max_chars=str(limit),
            language="the language of the customer's message",
            question=untrusted("customer", record.message.text),
            sources="\n".join(untrusted("source", s) for s in sources) or "(none)",
            draft=untrusted("template", body),
        )
        # a reply a model already wrote (the LLM planner's) is no source: the non-generated one it keeps is
        fallback = record.reply.fallback_text if record.reply.fallback_text is not None else draft
        sink = self._sink(ctx, record, [*sources, fallback]) if channel in cfg.stream_channels else None
        answer = await self._model.chat(cfg.tiers, messages, sources=[*sources, fallback], sink=sink)
        if answer is None:
            COMPOSED.labels("no_tier").inc()
            return record
        usage = usage_of(answer)
        text = fit(answer.text, limit)
        if text is None:  # spent, but unusable: the cost is still the turn's
            COMPOSED.labels("too_long").inc()
            return record.model_copy(update={"reply": record.reply.model_copy(update={"llm": usage})})
        COMPOSED.labels("generated").inc()
        reply = Reply(
            text=f"{text} {citation}" if citation else text,
            confidence=record.reply.confidence,
            llm=usage,
            fallback_text=fallback,
            sources=[*sources, fallback],
        )
        return record.model_copy(update={"reply": reply})

    def _sink(self, ctx: OperatorContext, record: ExecutedTurn, sources: list[str]) -> TokenSink | None:
        clients = ctx.clients
        inner = clients.reply_stream(record.message) if clients is not None else None
        if inner is None:
            return None
        said = [h.text for h in record.session.history if h.role == "customer"] + [record.message.text]
        own = [c.address for c in record.profile.contacts] if record.profile is not None else []
        performed = [r.name for r in record.results if r.status == "succeeded"]

        def passes(sentence: str) -> bool:
            return (
                check_grounding(sentence, [*sources, *said], performed) is None
                and check_reply_pii(sentence, [*said, *sources], own) is None
            )

        return CheckedSink(inner, passes)


class CheckedSink:
    """A preview that shows only what `guard` would let through, sentence by sentence.

    The customer watches the reply grow before `guard` has seen it whole, so each sentence is held until it
    ends and then checked as `guard` checks a generated reply (grounding, PII); the first sentence that fails
    stops the preview and clears what was shown, and the final, guarded reply arrives in its place. The last
    sentence is never previewed (it has not ended): the final reply brings it.
    """

    def __init__(self, inner: TokenSink, passes: Callable[[str], bool]) -> None:
        self._inner = inner
        self._passes = passes
        self._held = ""
        self._shown = False
        self._stopped = False

    async def token(self, text: str) -> None:
        if self._stopped:
            return
        self._held += text
        while (end := _SENTENCE_END.search(self._held)) is not None:
            sentence, self._held = self._held[: end.end()], self._held[end.end() :]
            if not self._passes(sentence):
                self._stopped = True
                if self._shown:
                    await self._inner.restart()
                    self._shown = False
                return
            await self._inner.token(sentence)
            self._shown = True

    async def restart(self) -> None:
        self._held, self._stopped = "", False
        if self._shown:
            await self._inner.restart()
            self._shown = False
