"""The agent workspace's back end: the escalation router (pure) and its configuration files.

`router.EscalationRouter` keeps the queue of hand-overs and assigns them to agents by skill,
language and load; pipelines/services/escalation_router.py runs it on Kafka. The web page and its login
live beside it (helper modules of the workspace service).
"""

from __future__ import annotations

from pipelines.handover.config import CATEGORIES_FILE, AgentsFile, load_agents, load_categories
from pipelines.handover.router import (
    EscalationRouter,
    PriorityRule,
    RouterOptions,
    notice_reply_id,
    primary_language,
)

__all__ = [
    "CATEGORIES_FILE",
    "AgentsFile",
    "EscalationRouter",
    "PriorityRule",
    "RouterOptions",
    "load_agents",
    "load_categories",
    "notice_reply_id",
    "primary_language",
]
