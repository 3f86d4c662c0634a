"""`supportflow profiles import`: publish customer profiles to `sf.profiles`.

Profiles change by records on the topic, never by writing a database: the Postgres sink stores
them and every worker's `profiles` table follows the topic. A file is validated whole before
anything is published, so a typo on line 900 does not leave 899 profiles half-imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from connectors.kafka import make_producer
from schemas import CustomerProfile

__all__ = ["ProfileFileError", "publish_profiles", "read_profiles"]


@dataclass(frozen=True)
class ProfileFileError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_profiles(path: Path) -> tuple[list[CustomerProfile], list[ProfileFileError]]:
    """Parse a JSON Lines file (one profile per line; blank lines and `#` comments skipped)."""
    profiles: list[CustomerProfile] = []
    errors: list[ProfileFileError] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                profiles.append(CustomerProfile.model_validate(json.loads(text)))
            except json.JSONDecodeError as exc:
                errors.append(ProfileFileError(number, f"not JSON: {exc.msg} at column {exc.colno}"))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
                errors.append(ProfileFileError(number, problems))
    return profiles, errors


def publish_profiles(
    conf: dict[str, object],
    topic: str,
    profiles: Iterable[CustomerProfile],
    exact_offsets: bool,
    on_published: Callable[[int], None] | None = None,
) -> int:
    """Publish keyed by customer id (the topic is compacted: the latest profile wins); wait for every ack."""
    producer = make_producer(dict(conf), exact_offsets=exact_offsets)
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))
        elif on_published is not None:
            on_published(1)

    count = 0
    for profile in profiles:
        producer.produce(topic, key=profile.customer_id.encode(), value=profile.to_bytes(), on_delivery=delivered)
        producer.poll(0)
        count += 1
    remaining = producer.flush(30)
    if remaining or failures:
        raise RuntimeError(f"{remaining} profile(s) unacknowledged, {len(failures)} failed: {failures[:3]}")
    return count
