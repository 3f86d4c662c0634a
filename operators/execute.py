"""execute: run the plan's actions and turn their results into the reply.

First version, deliberately simple: it renders the plan's template and marks any action as
skipped (no backend connectors exist yet), so it never claims an action happened. The agent
issue runs actions through connectors with timeouts and retries.
"""

from __future__ import annotations

from operators.base import Operator
from operators.protocols import OperatorContext
from schemas import ActionResult, ExecutedTurn, PlannedTurn, Reply


class ExecuteTemplates(Operator[PlannedTurn, ExecutedTurn]):
    """Render the reply template; report every planned action as skipped."""

    name = "execute"
    input_type = PlannedTurn
    output_type = ExecutedTurn

    async def run(self, record: PlannedTurn, ctx: OperatorContext) -> ExecutedTurn:
        results = [
            ActionResult(name=step.name, idempotency_key=step.idempotency_key, status="skipped", error="no connector")
            for step in record.plan.steps
        ]
        text = record.plan.reply_template.format(**record.plan.reply_variables)
        return ExecutedTurn(**dict(record), results=results, reply=Reply(text=text, confidence=record.nlu.confidence))
