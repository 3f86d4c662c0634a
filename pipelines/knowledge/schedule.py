"""When each configured knowledge source (`settings.knowledge_sources`) is next due for `kb sync`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors.knowledge.sources.spec import KnowledgeSourceSpec

__all__ = ["LastRun", "SyncState"]


@dataclass(frozen=True)
class LastRun:
    at: datetime
    ok: bool
    error: str | None = None


class SyncState:
    """When each source was last synced, in a JSON file of the data dir, so a `kb sync` run from cron and
    the one `supportflow run` keeps share one schedule on this machine.

    An attempt counts whether it worked or not: a failing source is tried again at its interval, not in
    a tight loop (`kb sync --all` runs it at once).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, LastRun] = {}
        self.load()

    def load(self) -> None:
        """Read the file again: another `kb sync` (cron's, or a `--all` by hand) may have synced meanwhile."""
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            self.runs = {
                source: LastRun(datetime.fromisoformat(run["at"]), bool(run["ok"]), run.get("error"))
                for source, run in raw.items()
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot read the sync state {self.path}: {exc}; delete it to start over") from exc

    def next_due(self, spec: KnowledgeSourceSpec) -> datetime | None:
        """When `spec` is next due; None: it never ran, so it is due now."""
        last = self.runs.get(spec.source)
        return None if last is None else last.at + spec.every

    def is_due(self, spec: KnowledgeSourceSpec, now: datetime) -> bool:
        due = self.next_due(spec)
        return due is None or now >= due

    def record(self, spec: KnowledgeSourceSpec, at: datetime, ok: bool, error: str | None = None) -> None:
        self.load()  # keep what another sync wrote about the other sources
        self.runs[spec.source] = LastRun(at, ok, error)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {s: {"at": r.at.isoformat(), "ok": r.ok, "error": r.error} for s, r in self.runs.items()}
        # written whole then renamed: a sync stopped mid-write leaves the previous schedule, not half of one
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(temporary, self.path)
