"""The analytics report: headline metrics over a window of the events and feedback tables, as text, JSON or PNG.

Every number comes from one SQL file in `connectors/clickhouse/queries/`, so what the report
prints is exactly what an analyst gets by running those files in clickhouse-client.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from connectors.clickhouse import load_query
from connectors.protocols import EventStore
from pipelines.evaluation.question_groups import Embed, group_questions

MAX_BUCKETS = 48
_BUCKET_WIDTHS_S = (60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400)
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_FORMAT_HELP = (
    "an ISO timestamp (2025-01-31, 2025-01-31T12:00:00Z; no zone means UTC), a duration ago (30m, 24h, 7d, 2w) or now"
)


def parse_moment(text: str, now: datetime) -> datetime:
    """An ISO timestamp or a duration before `now`, as an aware UTC datetime to the second."""
    value = text.strip().lower()
    if value == "now":
        moment = now
    elif match := _RELATIVE.match(value):
        moment = now - timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"expected {TIME_FORMAT_HELP}; got {text!r}") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=0)


def bucket_seconds_for(since: datetime, until: datetime) -> int:
    """The narrowest round bucket width that cuts the window into at most MAX_BUCKETS buckets."""
    span = max(1.0, (until - since).total_seconds())
    for width in _BUCKET_WIDTHS_S:
        if span / width <= MAX_BUCKETS:
            return width
    return math.ceil(span / MAX_BUCKETS / 86400) * 86400


class ChannelVolume(BaseModel):
    channel: str
    turns: int
    conversations: int


class IntentVolume(BaseModel):
    intent: str
    turns: int


class ModelVolume(BaseModel):
    model_used: str
    turns: int


class LlmTierVolume(BaseModel):
    """One language-model tier's turns, tokens and spend (`turns_by_llm_tier.sql`)."""

    tier: str = Field(description="small, large, large+small (two tiers on one turn), or none (no LLM)")
    turns: int
    share: float = Field(description="of all turns in the window")
    tokens_in: int
    tokens_out: int
    total_cost_usd: float
    cost_per_turn_usd: float
    models: list[str] = Field(description="the models that wrote these turns")


NO_LLM_TIER = "none (no LLM)"


class EscalationReason(BaseModel):
    reason: str
    escalations: int


class KnowledgeGap(BaseModel):
    """One question the knowledge base could not answer, its rewordings merged (`knowledge_gaps.sql`, then
    `question_groups.py`): a missing article."""

    domain: str = Field(description="the knowledge domain of the best passage found ('' when nothing was found)")
    question: str = Field(description="its most frequent wording, normalised (lower case, punctuation and spacing)")
    handovers: int = Field(description="over all its wordings")
    conversations: int = Field(description="summed over its wordings (a conversation asking two counts twice)")
    wordings: int = Field(description="distinct normalised wordings merged into it")
    intent: str = Field(description="the intent most often detected for its most frequent wording")
    examples: list[str] = Field(
        description="up to three spellings as the customers wrote them (PII-redacted), most frequent wording first"
    )
    last_seen: datetime


class LowConfidenceAnswer(BaseModel):
    """A question the knowledge base answered with a confidence just above its threshold, rewordings merged
    (`knowledge_low_confidence.sql`): an article that probably answers it badly."""

    domain: str
    question: str
    answers: int
    conversations: int = Field(description="summed over its wordings")
    wordings: int
    intent: str
    article: str = Field(description="the doc id its most frequent wording's answers cited most")
    mean_confidence: float = Field(description="over all its answers")
    mean_threshold: float
    examples: list[str]
    last_seen: datetime


class KnowledgeDomain(BaseModel):
    """The knowledge base's use in one domain (`knowledge_by_domain.sql`)."""

    domain: str
    searched: int = Field(description="turns `answer` looked up")
    answered: int
    low_confidence: int = Field(description="answered with a confidence less than the margin above the threshold")
    handed_over: int = Field(description="knowledge_gap hand-overs: retrieval fell short")
    template_kept: int = Field(description="side questions mid-task it could not answer: the template's reply stayed")
    mean_confidence: float


class KnowledgeArticle(BaseModel):
    """An article the replies cited (`knowledge_articles.sql`)."""

    article: str
    domain: str
    answers: int
    conversations: int
    low_confidence: int
    mean_confidence: float


class ContentGaps(BaseModel):
    """The content-gap report for the knowledge owners: per domain, what the knowledge base answered, where
    retrieval fell short, and the questions with no good article, reworded ones grouped."""

    low_confidence_margin: float = Field(description="an answer this close above its threshold counts as low")
    grouping: str = Field(
        description="how reworded questions were grouped: by meaning (the embedder) or by shared words (without one)"
    )
    by_domain: list[KnowledgeDomain]
    articles: list[KnowledgeArticle] = Field(description="the articles that answered, most cited first (top 100)")
    low_confidence: list[LowConfidenceAnswer] = Field(description="most answers first")


class ReplyLatency(BaseModel):
    replies: int
    p50_ms: float | None = Field(description="None when there are no replies")
    p95_ms: float | None
    p99_ms: float | None


class SentimentBucket(BaseModel):
    bucket_start: datetime
    turns: int
    mean_score: float = Field(description="-1 (negative) .. 1 (positive)")
    negative_share: float


class Csat(BaseModel):
    answers: int
    mean_rating: float | None = Field(description="1 .. 5; None when there are no answers")
    satisfied_share: float | None = Field(description="share of 4s and 5s")


class ChannelCsat(Csat):
    channel: str


class HandleTime(BaseModel):
    resolution_code: str
    resolutions: int
    p50_s: float
    p90_s: float


class FirstResponse(BaseModel):
    resolutions: int
    p50_s: float | None = Field(description="None when no resolution carried a first response time")
    p90_s: float | None


class IntentCorrection(BaseModel):
    original: str
    corrected: str
    corrections: int


class HumanReport(BaseModel):
    """What the humans' feedback says (`feedback` table): customers' CSAT, human handling, NLU corrections."""

    csat: Csat
    csat_by_channel: list[ChannelCsat]
    handle_time: list[HandleTime] = Field(description="p50/p90 of handle_time_s by resolution code")
    first_response: FirstResponse
    intent_corrections: list[IntentCorrection] = Field(description="original -> corrected intent, most frequent first")


class Report(BaseModel):
    """Headline metrics over [since, until). A turn is an agent reply or a hand-over to a human."""

    since: datetime
    until: datetime
    bucket_seconds: int
    turns: int
    conversations: int
    volume_by_channel: list[ChannelVolume]
    volume_by_intent: list[IntentVolume]
    turns_by_model: list[ModelVolume] = Field(description="which NLU model understood each turn (degraded mode)")
    resolved_autonomously: int = Field(description="conversations never handed to a human in the window")
    autonomous_resolution_rate: float | None = Field(description="resolved_autonomously / conversations")
    escalated_turns: int
    escalation_rate: float | None = Field(description="escalated_turns / turns")
    escalation_reasons: list[EscalationReason]
    knowledge_gaps: list[KnowledgeGap] = Field(
        description="questions handed over as knowledge_gap, reworded ones grouped, per domain, most frequent first"
    )
    knowledge: ContentGaps
    reply_latency: ReplyLatency
    sentiment_trend: list[SentimentBucket]
    total_cost_usd: float
    cost_per_conversation_usd: float | None
    turns_by_llm_tier: list[LlmTierVolume] = Field(
        description="share of turns, tokens and cost by language-model tier, most turns first"
    )
    human: HumanReport

    @property
    def llm_share(self) -> float | None:
        """Share of the turns a language model worked on; None without turns."""
        if not self.turns:
            return None
        return sum(t.turns for t in self.turns_by_llm_tier if t.tier != NO_LLM_TIER) / self.turns


_HAS_FEEDBACK = "SELECT count() AS n FROM system.tables WHERE database = currentDatabase() AND name = 'feedback'"
_HAS_LLM_COLUMNS = (
    "SELECT count() AS n FROM system.columns WHERE database = currentDatabase() AND table = 'events' "
    "AND name = 'llm_tier'"
)
_HAS_KNOWLEDGE_COLUMNS = (
    "SELECT count() AS n FROM system.columns WHERE database = currentDatabase() AND table = 'events' "
    "AND name = 'knowledge_used'"
)
LOW_CONFIDENCE_MARGIN = 0.1
_NO_FEEDBACK = HumanReport(
    csat=Csat(answers=0, mean_rating=None, satisfied_share=None),
    csat_by_channel=[],
    handle_time=[],
    first_response=FirstResponse(resolutions=0, p50_s=None, p90_s=None),
    intent_corrections=[],
)


async def build_human_report(store: EventStore, since: datetime, until: datetime) -> HumanReport:
    """The feedback queries over [since, until); empty figures for a store no sink has migrated since feedback came."""
    if (await store.query(_HAS_FEEDBACK))[0]["n"] == 0:
        return _NO_FEEDBACK.model_copy(deep=True)
    parameters: dict[str, Any] = {"since": since, "until": until}

    async def run(name: str) -> list[dict[str, Any]]:
        return await store.query(load_query(name), parameters)

    (csat,) = await run("csat")
    by_channel = await run("csat_by_channel")
    handle = await run("human_handle_time")
    (first,) = await run("human_first_response")
    corrections = await run("intent_corrections")
    answered, responded = csat["answers"] > 0, first["resolutions"] > 0  # 0 or nan for the aggregates of nothing
    return HumanReport(
        csat=Csat(
            answers=csat["answers"],
            mean_rating=csat["mean_rating"] if answered else None,
            satisfied_share=csat["satisfied_share"] if answered else None,
        ),
        csat_by_channel=[
            ChannelCsat(
                channel=row["channel_name"],
                answers=row["answers"],
                mean_rating=row["mean_rating"],
                satisfied_share=row["satisfied_share"],
            )
            for row in by_channel
        ],
        handle_time=[
            HandleTime(
                resolution_code=row["code"], resolutions=row["resolutions"], p50_s=row["p50_s"], p90_s=row["p90_s"]
            )
            for row in handle
        ],
        first_response=FirstResponse(
            resolutions=first["resolutions"],
            p50_s=first["p50_s"] if responded else None,
            p90_s=first["p90_s"] if responded else None,
        ),
        intent_corrections=[IntentCorrection(**row) for row in corrections],
    )


def _merged(rows: list[dict[str, Any]], count: str, embed: Embed | None) -> tuple[list[list[dict[str, Any]]], str]:
    """The query's wordings (most frequent first) grouped per domain, reworded ones together; most frequent
    group first, ties by domain and leading wording. Returns the groups and how they were grouped."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_domain.setdefault(row["domain"], []).append(row)
    groups: list[list[dict[str, Any]]] = []
    described = "nothing to group"
    for domain in sorted(by_domain):
        members = sorted(by_domain[domain], key=lambda r: (-r[count], r["question"]))
        indexes, grouping = group_questions([r["question"] for r in members], embed)
        groups.extend([members[i] for i in group] for group in indexes)
        described = grouping.describe()
    groups.sort(key=lambda g: (-sum(r[count] for r in g), g[0]["domain"], g[0]["question"]))
    return groups, described


def _examples(group: list[dict[str, Any]], limit: int = 3) -> list[str]:
    # one spelling per wording first (the most frequent wordings'), so the reader sees the rewordings
    firsts = [r["examples"][0] for r in group if r["examples"]]
    rest = [e for r in group for e in r["examples"][1:]]
    return list(dict.fromkeys(firsts + rest))[:limit]


def _gap(group: list[dict[str, Any]]) -> KnowledgeGap:
    lead = group[0]
    return KnowledgeGap(
        domain=lead["domain"],
        question=lead["question"],
        handovers=sum(r["handovers"] for r in group),
        conversations=sum(r["conversations"] for r in group),
        wordings=len(group),
        intent=lead["intent"],
        examples=_examples(group),
        last_seen=max(r["last_seen"] for r in group),
    )


def _low(group: list[dict[str, Any]]) -> LowConfidenceAnswer:
    lead, answers = group[0], sum(r["answers"] for r in group)
    return LowConfidenceAnswer(
        domain=lead["domain"],
        question=lead["question"],
        answers=answers,
        conversations=sum(r["conversations"] for r in group),
        wordings=len(group),
        intent=lead["intent"],
        article=lead["article"],
        mean_confidence=sum(r["mean_confidence"] * r["answers"] for r in group) / answers,
        mean_threshold=sum(r["mean_threshold"] * r["answers"] for r in group) / answers,
        examples=_examples(group),
        last_seen=max(r["last_seen"] for r in group),
    )


def report_parameters(
    since: datetime, until: datetime, low_confidence_margin: float = LOW_CONFIDENCE_MARGIN
) -> dict[str, Any]:
    """The values every report query's parameters take for a window."""
    return {
        "since": since,
        "until": until,
        "bucket_seconds": bucket_seconds_for(since, until),
        "margin": low_confidence_margin,
    }


async def build_report(
    store: EventStore,
    since: datetime,
    until: datetime,
    embed: Embed | None = None,
    low_confidence_margin: float = LOW_CONFIDENCE_MARGIN,
) -> Report:
    """Run every query file over the window and assemble their answers.

    `embed` groups reworded questions by meaning (`question_groups.py`); without it, by shared words.
    """
    parameters = report_parameters(since, until, low_confidence_margin)
    bucket = parameters["bucket_seconds"]

    async def run(name: str) -> list[dict[str, Any]]:
        return await store.query(load_query(name), parameters)

    channels = await run("volume_by_channel")
    intents = await run("volume_by_intent")
    models = await run("turns_by_model")
    (resolution,) = await run("autonomous_resolution")
    (escalation,) = await run("escalation_rate")
    reasons = await run("escalation_reasons")
    # a table no sink of this release has migrated yet has no knowledge columns: nothing recorded, nothing shown
    knows = (await store.query(_HAS_KNOWLEDGE_COLUMNS))[0]["n"] > 0
    gaps, gap_grouping = _merged(await run("knowledge_gaps") if knows else [], "handovers", embed)
    lows, low_grouping = _merged(await run("knowledge_low_confidence") if knows else [], "answers", embed)
    domains = await run("knowledge_by_domain") if knows else []
    articles = await run("knowledge_articles") if knows else []
    (latency,) = await run("reply_latency")
    trend = await run("sentiment_trend")
    (cost,) = await run("cost_per_conversation")
    # a table no sink of this release has migrated yet has no LLM columns: nothing recorded, nothing shown
    tiers = await run("turns_by_llm_tier") if (await store.query(_HAS_LLM_COLUMNS))[0]["n"] else []
    replied = latency["replies"] > 0  # 18.16 gives 0, newer servers nan, for the quantiles of nothing
    return Report(
        since=since,
        until=until,
        bucket_seconds=bucket,
        turns=escalation["turns"],
        conversations=resolution["conversations"],
        volume_by_channel=[ChannelVolume(**row) for row in channels],
        volume_by_intent=[IntentVolume(**row) for row in intents],
        turns_by_model=[ModelVolume(**row) for row in models],
        resolved_autonomously=resolution["resolved_autonomously"],
        autonomous_resolution_rate=resolution["rate"],
        escalated_turns=escalation["escalated"],
        escalation_rate=escalation["rate"],
        escalation_reasons=[EscalationReason(**row) for row in reasons],
        knowledge_gaps=[_gap(group) for group in gaps][:100],
        knowledge=ContentGaps(
            low_confidence_margin=low_confidence_margin,
            grouping=gap_grouping if gaps else low_grouping,
            by_domain=[KnowledgeDomain(**row) for row in domains],
            articles=[KnowledgeArticle(**row) for row in articles],
            low_confidence=[_low(group) for group in lows][:100],
        ),
        reply_latency=ReplyLatency(
            replies=latency["replies"],
            p50_ms=latency["p50_ms"] if replied else None,
            p95_ms=latency["p95_ms"] if replied else None,
            p99_ms=latency["p99_ms"] if replied else None,
        ),
        sentiment_trend=[SentimentBucket(**row) for row in trend],
        total_cost_usd=cost["total_cost_usd"],
        cost_per_conversation_usd=cost["cost_per_conversation_usd"],
        turns_by_llm_tier=[LlmTierVolume(**row) for row in tiers],
        human=await build_human_report(store, since, until),
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} s"


def _rating(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} / 5"


def _usd(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"${value:,.{digits}f}"


def llm_summary(report: Report) -> list[tuple[str, str]]:
    """The language-model figures of the headline: cost per conversation, LLM share, tokens."""
    tokens_in = sum(t.tokens_in for t in report.turns_by_llm_tier)
    tokens_out = sum(t.tokens_out for t in report.turns_by_llm_tier)
    return [
        ("cost per conversation", _usd(report.cost_per_conversation_usd)),
        ("total cost", _usd(report.total_cost_usd, 2)),
        ("turns with a language model", _pct(report.llm_share)),
        ("tokens in / out", f"{tokens_in:,} / {tokens_out:,}"),
    ]


def render_text(report: Report, top: int = 10) -> Group:
    """Rich tables for a terminal: headline figures first, then the breakdowns (top N rows each)."""
    window = f"supportflow analytics  {report.since:%Y-%m-%d %H:%M} → {report.until:%Y-%m-%d %H:%M} UTC"
    human = report.human
    headline = Table(title="headline", show_header=False, title_justify="left")
    headline.add_column("metric")
    headline.add_column("value", justify="right")
    for metric, value in (
        ("turns", f"{report.turns:,}"),
        ("conversations", f"{report.conversations:,}"),
        ("autonomous resolution", _pct(report.autonomous_resolution_rate)),
        ("escalation rate (turns)", _pct(report.escalation_rate)),
        ("reply latency p50", _ms(report.reply_latency.p50_ms)),
        ("reply latency p95", _ms(report.reply_latency.p95_ms)),
        ("reply latency p99", _ms(report.reply_latency.p99_ms)),
        ("CSAT answers", f"{human.csat.answers:,}"),
        ("CSAT mean", _rating(human.csat.mean_rating)),
        ("CSAT 4–5", _pct(human.csat.satisfied_share)),
        ("human first response p50", _s(human.first_response.p50_s)),
        ("human first response p90", _s(human.first_response.p90_s)),
    ):
        headline.add_row(metric, value)

    def breakdown(title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Table:
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows[:top]:
            table.add_row(*(f"{cell:,}" if isinstance(cell, int) else str(cell) for cell in row))
        if len(rows) > top:
            table.caption = f"{len(rows) - top} more not shown (--json has all)"
        return table

    llm = Table(title="language models", show_header=False, title_justify="left")
    llm.add_column("metric")
    llm.add_column("value", justify="right")
    for metric, value in llm_summary(report):
        llm.add_row(metric, value)
    trend = [
        (f"{b.bucket_start:%Y-%m-%d %H:%M}", b.turns, f"{b.mean_score:+.2f}", _pct(b.negative_share))
        for b in report.sentiment_trend
    ]
    return Group(
        Text(window, style="bold"),
        headline,
        breakdown(
            "volume by channel",
            ("channel", "turns", "conversations"),
            [(v.channel, v.turns, v.conversations) for v in report.volume_by_channel],
        ),
        breakdown("volume by intent", ("intent", "turns"), [(v.intent, v.turns) for v in report.volume_by_intent]),
        llm,
        breakdown(
            "language models: turns, tokens and cost by tier",
            ("tier", "turns", "share", "tokens in", "tokens out", "cost", "cost / turn", "models"),
            [
                (
                    t.tier,
                    t.turns,
                    _pct(t.share),
                    t.tokens_in,
                    t.tokens_out,
                    _usd(t.total_cost_usd),
                    _usd(t.cost_per_turn_usd, 5),
                    escape(", ".join(t.models)) or "—",
                )
                for t in report.turns_by_llm_tier
            ],
        ),
        breakdown("turns by NLU model", ("model", "turns"), [(m.model_used, m.turns) for m in report.turns_by_model]),
        breakdown(
            "escalation reasons",
            ("reason", "escalations"),
            [(r.reason, r.escalations) for r in report.escalation_reasons],
        ),
        *knowledge_tables(report, breakdown),
        breakdown(f"sentiment per {report.bucket_seconds // 60} min", ("from", "turns", "mean", "negative"), trend),
        breakdown(
            "CSAT by channel",
            ("channel", "answers", "mean", "4–5"),
            [(c.channel, c.answers, _rating(c.mean_rating), _pct(c.satisfied_share)) for c in human.csat_by_channel],
        ),
        breakdown(
            "human handle time by resolution",
            ("resolution", "resolutions", "p50", "p90"),
            [(h.resolution_code, h.resolutions, _s(h.p50_s), _s(h.p90_s)) for h in human.handle_time],
        ),
        breakdown(
            "intent corrections",
            ("model said", "human said", "corrections"),
            [(c.original, c.corrected, c.corrections) for c in human.intent_corrections],
        ),
    )


def knowledge_tables(
    report: Report, breakdown: Callable[[str, tuple[str, ...], list[tuple[Any, ...]]], Table]
) -> list[Any]:
    """The content-gap report's tables: per domain, the articles that answered, the gaps, the weak answers."""
    knowledge = report.knowledge
    margin = f"{knowledge.low_confidence_margin:.2f}"
    gaps = breakdown(
        "knowledge gaps: questions handed over as knowledge_gap, the help center's missing articles",
        ("question (examples as written)", "domain", "hand-overs", "conversations", "wordings", "intent", "last seen"),
        [
            (
                escape("\n".join(g.examples or [g.question])),  # customers' words: "[x]" is not markup
                escape(g.domain) or "—",
                g.handovers,
                g.conversations,
                g.wordings,
                g.intent,
                f"{g.last_seen:%Y-%m-%d %H:%M}",
            )
            for g in report.knowledge_gaps
        ],
    )
    low = breakdown(
        f"answered with low confidence (less than {margin} above the threshold): articles that answer weakly",
        ("question (examples as written)", "domain", "answers", "wordings", "article", "confidence", "threshold"),
        [
            (
                escape("\n".join(a.examples or [a.question])),
                escape(a.domain) or "—",
                a.answers,
                a.wordings,
                escape(a.article),
                f"{a.mean_confidence:.2f}",
                f"{a.mean_threshold:.2f}",
            )
            for a in knowledge.low_confidence
        ],
    )
    for table in (gaps, low):
        note = f"reworded questions grouped {knowledge.grouping}"
        table.caption = f"{table.caption}; {note}" if table.caption else note
    return [
        breakdown(
            f"knowledge base by domain (low confidence: less than {margin} above the threshold)",
            ("domain", "searched", "answered", "low confidence", "handed over", "template kept", "mean confidence"),
            [
                (
                    escape(d.domain) or "—",
                    d.searched,
                    d.answered,
                    d.low_confidence,
                    d.handed_over,
                    d.template_kept,
                    f"{d.mean_confidence:.2f}",
                )
                for d in knowledge.by_domain
            ],
        ),
        breakdown(
            "articles that answered",
            ("article", "domain", "answers", "conversations", "low confidence", "mean confidence"),
            [
                (
                    escape(a.article),
                    escape(a.domain),
                    a.answers,
                    a.conversations,
                    a.low_confidence,
                    f"{a.mean_confidence:.2f}",
                )
                for a in knowledge.articles
            ],
        ),
        gaps,
        low,
    ]


def render_png(report: Report, path: Path, top: int = 10) -> Path:
    """A one-page chart of the report (matplotlib, Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 3, figsize=(16, 17), layout="constrained")
    fig.suptitle(f"supportflow analytics  {report.since:%Y-%m-%d %H:%M} → {report.until:%Y-%m-%d %H:%M} UTC")
    volume, intents, latency, headline, sentiment, reasons, llm_share, llm_tokens, llm_cost = axes.flat[:9]
    kb_domains, kb_gaps, kb_low = axes.flat[9:]

    def empty(ax: Any, title: str) -> None:
        ax.set_title(title)
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
        ax.set_yticks([])

    if report.volume_by_channel:
        volume.bar([v.channel for v in report.volume_by_channel], [v.turns for v in report.volume_by_channel])
        volume.set_title("turns by channel")
        volume.tick_params(axis="x", rotation=30)
    else:
        empty(volume, "turns by channel")

    if report.volume_by_intent:
        shown = report.volume_by_intent[:top][::-1]
        intents.barh([v.intent for v in shown], [v.turns for v in shown])
        intents.set_title(f"top {len(shown)} intents (turns)")
    else:
        empty(intents, "top intents")

    if report.reply_latency.replies:
        lat = report.reply_latency
        values = [lat.p50_ms or 0.0, lat.p95_ms or 0.0, lat.p99_ms or 0.0]
        bars = latency.bar(["p50", "p95", "p99"], values, color=["tab:green", "tab:orange", "tab:red"])
        latency.bar_label(bars, fmt="%.0f")
        latency.set_ylabel("ms")
        latency.set_title(f"reply latency ({report.reply_latency.replies:,} replies)")
    else:
        empty(latency, "reply latency")

    headline.axis("off")
    cost = "—" if report.cost_per_conversation_usd is None else f"${report.cost_per_conversation_usd:.4f}"
    lines = [
        f"turns                  {report.turns:,}",
        f"conversations          {report.conversations:,}",
        f"autonomous resolution  {_pct(report.autonomous_resolution_rate)}",
        f"escalation rate        {_pct(report.escalation_rate)}",
        f"cost per conversation  {cost}",
        f"total cost             ${report.total_cost_usd:.2f}",
        f"turns with an LLM      {_pct(report.llm_share)}",
        f"CSAT                   {_rating(report.human.csat.mean_rating)} ({report.human.csat.answers:,} answers)",
        f"CSAT 4–5               {_pct(report.human.csat.satisfied_share)}",
        f"human 1st response p50 {_s(report.human.first_response.p50_s)}",
    ]
    headline.text(0.02, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=12, transform=headline.transAxes)
    headline.set_title("headline")

    if report.sentiment_trend:
        starts = [b.bucket_start for b in report.sentiment_trend]
        sentiment.plot(starts, [b.mean_score for b in report.sentiment_trend], marker=".", label="mean score")
        sentiment.plot(starts, [b.negative_share for b in report.sentiment_trend], marker=".", label="negative share")
        sentiment.axhline(0, color="grey", linewidth=0.5)
        sentiment.set_ylim(-1.05, 1.05)
        sentiment.legend(loc="lower left")
        sentiment.tick_params(axis="x", rotation=30)
        sentiment.set_title(f"sentiment per {report.bucket_seconds // 60} min")
    else:
        empty(sentiment, "sentiment trend")

    if report.escalation_reasons:
        shown_reasons = report.escalation_reasons[:top][::-1]
        reasons.barh([r.reason for r in shown_reasons], [r.escalations for r in shown_reasons], color="tab:red")
        reasons.set_title("escalation reasons")
    else:
        empty(reasons, "escalation reasons")

    tiers = report.turns_by_llm_tier[:top]
    if tiers:
        names = [t.tier for t in tiers][::-1]
        bars = llm_share.barh(names, [t.share * 100 for t in tiers][::-1], color="tab:purple")
        llm_share.bar_label(bars, labels=[f"{t.turns:,}" for t in tiers][::-1])
        llm_share.set_xlabel("% of turns (label: turns)")
        llm_share.set_title("language models: share of turns by tier")
        positions = range(len(tiers))
        width = 0.4
        llm_tokens.bar([p - width / 2 for p in positions], [t.tokens_in for t in tiers], width, label="in (prompt)")
        llm_tokens.bar([p + width / 2 for p in positions], [t.tokens_out for t in tiers], width, label="out")
        llm_tokens.set_xticks(list(positions), [t.tier for t in tiers], rotation=30)
        llm_tokens.legend(loc="upper right")
        llm_tokens.set_title("language models: tokens by tier")
        cost_bars = llm_cost.bar([t.tier for t in tiers], [t.total_cost_usd for t in tiers], color="tab:olive")
        llm_cost.bar_label(cost_bars, labels=[f"${t.cost_per_turn_usd:.4f}/turn" for t in tiers])
        llm_cost.set_ylabel("USD")
        llm_cost.tick_params(axis="x", rotation=30)
        llm_cost.set_title("language models: cost by tier")
    else:
        for ax, title in ((llm_share, "share of turns by tier"), (llm_tokens, "tokens by tier"), (llm_cost, "cost")):
            empty(ax, f"language models: {title}")

    knowledge = report.knowledge
    if knowledge.by_domain:
        names = [d.domain or "(none)" for d in knowledge.by_domain[:top]]
        confident = [d.answered - d.low_confidence for d in knowledge.by_domain[:top]]
        low = [d.low_confidence for d in knowledge.by_domain[:top]]
        short = [d.handed_over + d.template_kept for d in knowledge.by_domain[:top]]
        kb_domains.bar(names, confident, label="answered", color="tab:green")
        kb_domains.bar(names, low, bottom=confident, label="answered, low confidence", color="tab:orange")
        kb_domains.bar(
            names,
            short,
            bottom=[a + b for a, b in zip(confident, low, strict=True)],
            label="fell short",
            color="tab:red",
        )
        kb_domains.legend(loc="upper right")
        kb_domains.tick_params(axis="x", rotation=30)
        kb_domains.set_title("knowledge base by domain (turns)")
    else:
        empty(kb_domains, "knowledge base by domain")
    for ax, rows, title, color in (
        (kb_gaps, [(g.question, g.handovers, g.domain) for g in report.knowledge_gaps], "knowledge gaps", "tab:red"),
        (
            kb_low,
            [(a.question, a.answers, a.domain) for a in knowledge.low_confidence],
            "low-confidence answers",
            "tab:orange",
        ),
    ):
        if rows:
            shown_rows = rows[:top][::-1]
            labels = [f"{_clip(q, 38)} [{d or '—'}]" for q, _, d in shown_rows]
            ax.barh(labels, [n for _, n, _ in shown_rows], color=color)
            ax.set_title(f"{title}, reworded ones grouped")
        else:
            empty(ax, title)

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
