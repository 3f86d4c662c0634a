"""retrieve: look a turn's question up in the tenant's knowledge base and attach what it found to the plan.

It follows `plan` and takes the turns `plan` answered from a reply template (`operators/data/replies.yaml`:
an intent without a playbook, or out of scope), and a side question asked in the middle of a playbook task
(`Plan.aside`); a playbook's own turn passes untouched. The question (completed from the customer's earlier
turns when it is a follow-up; an aside alone) goes to the knowledge base's hybrid retriever
(`connectors/knowledge/retriever.py` through `ctx.clients`), and the turn leaves with `Plan.knowledge`: the
passages, the calibrated confidence, the threshold an answer needs and whether the passages reach it
(`answerable`). Nothing is answered here: `answer` quotes the passages, `llm_plan` plans from them, and
`escalate` hands them to the human.

To search another way, put an operator of your own in its place in `topology.yaml` (`package.module:Class`):
whatever fills `Plan.knowledge` the same way feeds every operator after it.

A knowledge base that is not configured, unreachable, slow or empty never fails the turn: the plan stays as
`plan` made it (its template reply), the log says why, `supportflow_knowledge_turns_total{outcome="unavailable"}`
counts it, and the store is left alone for `retry_after_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar, Literal

from prometheus_client import Counter
from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import KnowledgeOptions, KnowledgeRetriever, OperatorContext
from schemas import KnowledgeUse, Plan, PlannedTurn

__all__ = ["KNOWLEDGE_TURNS", "TEMPLATE_PLANNER", "Retrieve", "RetrieveConfig", "looked_up_as"]

log = logging.getLogger(__name__)

TEMPLATE_PLANNER = "templates-v1"  # what `plan` writes for a turn it answers from a reply template
KNOWLEDGE_TURNS = Counter(
    "supportflow_knowledge_turns_total",
    "Turns looked up in the knowledge base, by outcome (answered, handed_over, unavailable; kept_template: a "
    "side question mid-task the knowledge base could not answer).",
    ["outcome"],
)


def looked_up_as(plan: Plan, skip_intents: list[str]) -> Literal["question", "aside"] | None:
    """How a turn's text is searched: as a question (its template reply may be replaced), as a side question
    inside a task (only the quoted part may be), or not at all (a playbook's turn, an intent always templated)."""
    if plan.aside is not None and plan.reply_template.startswith(plan.aside):
        return "aside"
    if plan.planner == TEMPLATE_PLANNER and plan.intent not in skip_intents:
        return "question"
    return None


class RetrieveConfig(OperatorConfig):
    model_name: str = Field(
        default="text_embedder",
        description="the embedder Triton serves for the knowledge base (triton_models/<model_name>)",
    )
    k: int = Field(default=5, ge=1, le=20, description="passages retrieved per question")
    min_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="the answerability confidence an answer needs; unset: the retriever's calibrated threshold",
    )
    timeout_s: float = Field(default=5.0, gt=0, description="longest the knowledge base may take for one turn")
    retry_after_s: float = Field(
        default=30.0,
        ge=0,
        description="after a failure, the store is left alone this long (turns keep their template reply)",
    )
    history_turns: int = Field(default=4, ge=0, description="earlier customer turns a follow-up is completed from")
    skip_intents: list[str] = Field(
        default_factory=lambda: ["contact_human_agent"], description="intents whose template always stands"
    )
    domains: list[str] = Field(default_factory=list, description="search only these domains (empty: all)")


class Retrieve(Operator[PlannedTurn, PlannedTurn]):
    """Attach the knowledge base's best passages and its confidence to a templated or side-question turn."""

    name = "retrieve"
    input_type = PlannedTurn
    output_type = PlannedTurn
    Config: ClassVar[type[OperatorConfig]] = RetrieveConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._retriever: KnowledgeRetriever | None = None
        self._warmed = False
        self._resting_until = 0.0  # time.monotonic(): a store that just failed is not asked on every turn

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: RetrieveConfig = self.config  # type: ignore[assignment]
        self._warmed = True
        if ctx.clients is None:
            return
        try:
            self._retriever = ctx.clients.knowledge_retriever(KnowledgeOptions(model_name=cfg.model_name, k=cfg.k))
        except (OSError, ImportError, ValueError) as exc:  # no exported embedder: the templates answer
            log.error("retrieve: no knowledge base (%s); replies come from the templates", exc)
            return
        if self._retriever is None:
            log.warning("retrieve: no knowledge store configured; replies come from the templates")

    async def run(self, record: PlannedTurn, ctx: OperatorContext) -> PlannedTurn:
        if not self._warmed:
            self.warm_up(ctx)
        cfg: RetrieveConfig = self.config  # type: ignore[assignment]
        kind = looked_up_as(record.plan, cfg.skip_intents)
        if self._retriever is None or kind is None:
            return record
        if time.monotonic() < self._resting_until:
            KNOWLEDGE_TURNS.labels("unavailable").inc()
            return record
        said = [h.text for h in record.session.history if h.role == "customer"]
        # an aside is its own question: the task's earlier turns would pull the search towards the task
        history = said[-cfg.history_turns :] if kind == "question" and cfg.history_turns else []
        try:
            retrieval = await asyncio.wait_for(
                self._retriever.retrieve(record.message.text, history=history, k=cfg.k, domains=cfg.domains),
                cfg.timeout_s,
            )
        except Exception as exc:  # the store is down, slow or empty: the template reply stands
            log.warning("retrieve: knowledge base unavailable for %s (%s: %s)", record.message.message_id,
                        type(exc).__name__, exc)  # fmt: skip
            KNOWLEDGE_TURNS.labels("unavailable").inc()
            self._resting_until = time.monotonic() + cfg.retry_after_s
            return record
        threshold = retrieval.threshold
        if cfg.min_confidence is not None:
            threshold = max(threshold, cfg.min_confidence)
        use = KnowledgeUse(
            query=retrieval.query,
            confidence=retrieval.confidence,
            threshold=threshold,
            answerable=retrieval.answerable and retrieval.confidence >= threshold,
            answered=False,
            passages=list(retrieval.passages),
        )
        return record.model_copy(update={"plan": record.plan.model_copy(update={"knowledge": use})})
