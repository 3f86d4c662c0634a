"""The workspace's configuration files: the agents (YAML) and the intent -> category map."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas import AgentSpec

__all__ = ["CATEGORIES_FILE", "AgentsFile", "load_agents", "load_categories"]

CATEGORIES_FILE = Path(__file__).with_name("data") / "categories.yaml"


class AgentsFile(BaseModel):
    """The agents YAML: `agents: [{agent_id, display_name, skills, languages, capacity, queues, ...}]`."""

    model_config = ConfigDict(extra="forbid")

    agents: list[AgentSpec] = Field(default_factory=list)

    @field_validator("agents")
    @classmethod
    def _unique_ids(cls, agents: list[AgentSpec]) -> list[AgentSpec]:
        seen: set[str] = set()
        for agent in agents:
            if agent.agent_id in seen:
                raise ValueError(f"agent id {agent.agent_id!r} appears twice")
            seen.add(agent.agent_id)
        return agents


def load_agents(path: Path) -> list[AgentSpec]:
    """Read and validate the agents file whole: one bad entry refuses the file (a typo is not an agent)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return AgentsFile.model_validate(data).agents


def load_categories(path: Path | None = None) -> dict[str, str]:
    """intent -> category (lower case); the bundled Bitext map unless `path` names another."""
    data = yaml.safe_load((path or CATEGORIES_FILE).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path or CATEGORIES_FILE}: expected a mapping of intent: category")
    return {k.lower(): v.lower() for k, v in data.items()}
