"""plan: decide what to do and say for the turn.

First version, deliberately simple: one reply template per intent from
`operators/data/replies.yaml`, no backend actions. The agent issue replaces it with playbooks
(slots, verification, confirmation, actions); the output stays a `Plan`, which is data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import Plan, PlannedTurn, RoutedTurn

DEFAULT_REPLIES = Path(__file__).parent / "data" / "replies.yaml"
FALLBACK_INTENT = "out_of_scope"


class PlanConfig(OperatorConfig):
    replies_file: Path = DEFAULT_REPLIES


def load_replies(path: Path) -> dict[str, dict[str, Any]]:
    """Read the templates, failing at start (not per record) when the file is unusable."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or FALLBACK_INTENT not in data:
        raise ValueError(f"{path}: expected a mapping of intent to templates with an {FALLBACK_INTENT!r} entry")
    return data


class PlanFromTemplates(Operator[RoutedTurn, PlannedTurn]):
    """Pick the intent's reply template, preferring the variant whose entity the customer gave."""

    name = "plan"
    input_type = RoutedTurn
    output_type = PlannedTurn
    Config: ClassVar[type[OperatorConfig]] = PlanConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._replies: dict[str, dict[str, Any]] = {}

    def warm_up(self, ctx: OperatorContext) -> None:
        config: PlanConfig = self.config  # type: ignore[assignment]
        self._replies = load_replies(config.replies_file)

    async def run(self, record: RoutedTurn, ctx: OperatorContext) -> PlannedTurn:
        if not self._replies:
            self.warm_up(ctx)
        intent = record.nlu.intent if record.nlu.intent in self._replies else FALLBACK_INTENT
        entry = self._replies[intent]
        entities = {e.type: e.value for e in record.nlu.entities}
        template, variables = entry["default"], {}
        for entity_type, variant in (entry.get("with") or {}).items():
            if entity_type in entities:
                template, variables = variant, {entity_type: entities[entity_type]}
                break
        plan = Plan(planner="templates-v1", intent=intent, reply_template=template, reply_variables=variables)
        return PlannedTurn(**dict(record), plan=plan)
