"""Releases of the knowledge base in PostgreSQL: immutable sets of document versions per domain.

A release is cut from a domain's head (every document's latest, non-deleted version) and made
live by moving the domain's pointer in `kb_live_releases`; a rollback moves the pointer back.
Nothing is re-embedded either way: every released version keeps its chunks and vectors (the
foreign key from `kb_release_documents` keeps them from garbage collection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

__all__ = [
    "ReleaseDiff",
    "ReleaseError",
    "ReleaseInfo",
    "collect_garbage",
    "create_release",
    "diff_releases",
    "list_releases",
    "live_release",
    "rollback",
]

# an arbitrary constant naming "knowledge releases" among advisory locks, combined with the domain
_LOCK_KEY = 0x5F_16_4B_00


class ReleaseError(LookupError):
    """A release named that does not exist, or a move the rules forbid; the message says which."""


@dataclass(frozen=True)
class ReleaseInfo:
    release_id: str
    domain: str
    seq: int
    document_count: int
    created_at: datetime
    live: bool
    note: str | None = None


@dataclass(frozen=True)
class ReleaseDiff:
    """Documents of release `a` and `b` compared by version; each list holds (doc_id, title in b or a)."""

    a: str
    b: str
    added: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)


def release_name(domain: str, seq: int) -> str:
    """`billing@3`: readable, typable, and the domain is visible in every listing."""
    return f"{domain}@{seq}"


_SELECT_RELEASES = """
SELECT r.release_id, r.domain, r.seq, r.document_count, r.created_at, r.note,
       (l.release_id IS NOT NULL) AS live
FROM kb_releases r LEFT JOIN kb_live_releases l ON l.release_id = r.release_id
"""


def _info(row: asyncpg.Record) -> ReleaseInfo:
    return ReleaseInfo(
        release_id=row["release_id"],
        domain=row["domain"],
        seq=row["seq"],
        document_count=row["document_count"],
        created_at=row["created_at"],
        live=row["live"],
        note=row["note"],
    )


async def list_releases(conn: asyncpg.Connection, domain: str | None = None) -> list[ReleaseInfo]:
    rows = await conn.fetch(
        _SELECT_RELEASES + " WHERE $1::text IS NULL OR r.domain = $1 ORDER BY r.domain, r.seq", domain
    )
    return [_info(row) for row in rows]


async def get_release(conn: asyncpg.Connection, release_id: str) -> ReleaseInfo:
    row = await conn.fetchrow(_SELECT_RELEASES + " WHERE r.release_id = $1", release_id)
    if row is None:
        raise ReleaseError(f"no release {release_id!r} (see `supportflow kb releases`)")
    return _info(row)


async def live_release(conn: asyncpg.Connection, domain: str) -> ReleaseInfo | None:
    row = await conn.fetchrow(_SELECT_RELEASES + " WHERE r.domain = $1 AND l.release_id IS NOT NULL", domain)
    return _info(row) if row is not None else None


async def create_release(
    conn: asyncpg.Connection,
    domain: str,
    *,
    only_if_changed: bool = True,
    make_live: bool = True,
    note: str | None = None,
) -> tuple[ReleaseInfo | None, bool]:
    """Cut a release from the domain's head; returns (the release, whether it is new).

    With `only_if_changed`, a head equal to the domain's latest release cuts nothing and moves no
    pointer: re-ingesting an unchanged source after a rollback leaves the rollback in place. A
    domain that never had a document has no release (None).
    """
    async with conn.transaction():
        # two ingests of one domain must not both take the next number
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_KEY, domain)
        latest = await conn.fetchrow(
            "SELECT release_id, seq FROM kb_releases WHERE domain = $1 ORDER BY seq DESC LIMIT 1", domain
        )
        if latest is None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM kb_documents WHERE domain = $1)", domain
        ):
            return None, False
        if only_if_changed and latest is not None:
            differs = await conn.fetchval(
                """
                SELECT EXISTS (
                    (SELECT doc_id, content_hash FROM kb_documents WHERE domain = $1 AND NOT deleted
                     EXCEPT SELECT doc_id, content_hash FROM kb_release_documents WHERE release_id = $2)
                    UNION ALL
                    (SELECT doc_id, content_hash FROM kb_release_documents WHERE release_id = $2
                     EXCEPT SELECT doc_id, content_hash FROM kb_documents WHERE domain = $1 AND NOT deleted)
                )
                """,
                domain,
                latest["release_id"],
            )
            if not differs:
                return await get_release(conn, latest["release_id"]), False
        seq = (latest["seq"] if latest is not None else 0) + 1
        release_id = release_name(domain, seq)
        count = await conn.fetchval("SELECT count(*) FROM kb_documents WHERE domain = $1 AND NOT deleted", domain)
        await conn.execute(
            "INSERT INTO kb_releases (release_id, domain, seq, document_count, note) VALUES ($1, $2, $3, $4, $5)",
            release_id,
            domain,
            seq,
            count,
            note,
        )
        await conn.execute(
            """
            INSERT INTO kb_release_documents (release_id, doc_id, content_hash)
            SELECT $1, doc_id, content_hash FROM kb_documents WHERE domain = $2 AND NOT deleted
            ORDER BY doc_id
            """,
            release_id,
            domain,
        )
        if make_live:
            await _point(conn, domain, release_id)
        return await get_release(conn, release_id), True


async def _point(conn: asyncpg.Connection, domain: str, release_id: str) -> None:
    await conn.execute(
        """
        INSERT INTO kb_live_releases (domain, release_id) VALUES ($1, $2)
        ON CONFLICT (domain) DO UPDATE SET release_id = excluded.release_id, changed_at = now()
        WHERE kb_live_releases.release_id IS DISTINCT FROM excluded.release_id
        """,
        domain,
        release_id,
    )


async def rollback(conn: asyncpg.Connection, release_id: str) -> tuple[ReleaseInfo | None, ReleaseInfo]:
    """Make `release_id` its domain's live release; returns (the release live before, the one live now).

    Only that domain's pointer moves; other domains keep theirs.
    """
    async with conn.transaction():
        target = await get_release(conn, release_id)
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_KEY, target.domain)
        before = await live_release(conn, target.domain)
        await _point(conn, target.domain, release_id)
        return before, await get_release(conn, release_id)


async def diff_releases(conn: asyncpg.Connection, a: str, b: str) -> ReleaseDiff:
    """What changed from release `a` to release `b`, document by document."""
    await get_release(conn, a)
    await get_release(conn, b)
    rows = await conn.fetch(
        """
        SELECT coalesce(rb.doc_id, ra.doc_id) AS doc_id,
               ra.content_hash AS hash_a, rb.content_hash AS hash_b,
               coalesce(vb.title, va.title) AS title
        FROM (SELECT doc_id, content_hash FROM kb_release_documents WHERE release_id = $1) ra
        FULL JOIN (SELECT doc_id, content_hash FROM kb_release_documents WHERE release_id = $2) rb
             ON ra.doc_id = rb.doc_id
        LEFT JOIN kb_document_versions va ON va.doc_id = ra.doc_id AND va.content_hash = ra.content_hash
        LEFT JOIN kb_document_versions vb ON vb.doc_id = rb.doc_id AND vb.content_hash = rb.content_hash
        WHERE ra.content_hash IS DISTINCT FROM rb.content_hash
        ORDER BY 1
        """,
        a,
        b,
    )
    diff = ReleaseDiff(a=a, b=b)
    for row in rows:
        entry = (row["doc_id"], row["title"])
        if row["hash_a"] is None:
            diff.added.append(entry)
        elif row["hash_b"] is None:
            diff.removed.append(entry)
        else:
            diff.changed.append(entry)
    return diff


async def collect_garbage(conn: asyncpg.Connection) -> int:
    """Drop versions no release holds and no head points at, then chunks no version holds (their
    vectors go by cascade); returns the number of chunks dropped."""
    async with conn.transaction():
        await conn.execute(
            """
            DELETE FROM kb_document_versions v
            WHERE NOT EXISTS (SELECT 1 FROM kb_release_documents r
                              WHERE r.doc_id = v.doc_id AND r.content_hash = v.content_hash)
              AND NOT EXISTS (SELECT 1 FROM kb_documents d
                              WHERE d.doc_id = v.doc_id AND d.content_hash = v.content_hash AND NOT d.deleted)
            """
        )
        dropped = await conn.execute(
            """
            DELETE FROM kb_chunks c
            WHERE NOT EXISTS (SELECT 1 FROM kb_version_chunks vc WHERE vc.chunk_id = c.chunk_id)
            """
        )
    return int(dropped.split()[-1])
