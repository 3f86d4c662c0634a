"""Email threading: Message-IDs that carry the conversation, and what a reply needs to thread.

Our outbound Message-IDs encode the conversation id (`<sf.<base32 conv id>.<reply hash>@domain>`),
so a customer's reply, whose `In-Reply-To`/`References` name that id, reveals its conversation
with no lookup table shared between the listener and the sender.

What the sender needs to thread its reply under the customer's mail (their Message-ID, their
References chain, their subject) is not in `OutboundMessage`; the listener records it in a small
SQLite file (`ThreadStore`) keyed by our inbound message id, and the sender reads it. Both
processes default to the same file in the data dir; on separate hosts the reply still goes out,
threaded by our own Message-ID only, with the pipeline's subject.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ThreadInfo",
    "ThreadStore",
    "conversation_from_headers",
    "inbound_message_id",
    "message_ids",
    "outbound_message_id",
    "reply_subject",
]

_OURS = re.compile(r"<sf\.([a-z2-7]+)\.[0-9a-f]{20}@([^>\s]+)>", re.IGNORECASE)
_ANGLE_IDS = re.compile(r"<[^<>\s]+>")


def _b32(text: str) -> str:
    return base64.b32encode(text.encode("utf-8")).decode("ascii").rstrip("=").lower()


def _unb32(token: str) -> str | None:
    padded = token.upper() + "=" * (-len(token) % 8)
    try:
        return base64.b32decode(padded).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def outbound_message_id(reply_id: str, conversation_id: str, domain: str) -> str:
    """The Message-ID of our reply: the same reply id always yields the same header (idempotent resends).

    base32 keeps any conversation id inside the characters a Message-ID may hold.
    """
    digest = hashlib.sha256(f"reply:{reply_id}".encode()).hexdigest()[:20]
    return f"<sf.{_b32(conversation_id)}.{digest}@{domain.lower()}>"


def conversation_from_headers(in_reply_to: str | None, references: str | None, domain: str) -> str | None:
    """The conversation named by the newest of our Message-IDs in In-Reply-To, else in References.

    A hint, not proof: anyone can write these headers, so normalize should use it only for a
    conversation that belongs to the customer the sender resolves to.
    """
    for header in (in_reply_to or "", " ".join(reversed((references or "").split()))):
        for match in _OURS.finditer(header):
            if match.group(2).lower() == domain.lower():
                conversation = _unb32(match.group(1))
                if conversation:
                    return conversation
    return None


def inbound_message_id(header_message_id: str | None, fallback: bytes) -> str:
    """Our message id for a received mail: from its Message-ID, so a resent mail dedupes.

    Mail without a Message-ID (rare, badly behaved clients) is keyed by its bytes instead.
    """
    if header_message_id and header_message_id.strip():
        basis = "mid:" + header_message_id.strip().lower()
    else:
        basis = "raw:" + hashlib.sha256(fallback).hexdigest()
    return "em-" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]


def reply_subject(original: str | None, fallback: str | None) -> str:
    """`Re: <original>` once (no `Re: Re:` chains); the pipeline's subject when the original is unknown."""
    if original and original.strip():
        subject = " ".join(original.split())
        return subject if re.match(r"^(re|aw|sv)\s*:", subject, re.IGNORECASE) else f"Re: {subject}"
    return fallback or "Re: your message to support"


def message_ids(header: str | None) -> list[str]:
    """The `<...>` ids in a References/In-Reply-To header, in order."""
    return _ANGLE_IDS.findall(header or "")


@dataclass(frozen=True)
class ThreadInfo:
    """What a reply to one inbound mail needs to thread under it in the customer's client."""

    email_message_id: str | None
    references: tuple[str, ...]
    subject: str | None


class ThreadStore:
    """inbound message id → ThreadInfo, in one SQLite file shared by listener and sender.

    SQLite (stdlib) because the two run as separate processes; WAL lets one write while the
    other reads. Rows are small and a mail is looked up once, so no expiry is kept here.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS email_threads ("
            " message_id TEXT PRIMARY KEY, email_message_id TEXT, refs TEXT NOT NULL, subject TEXT)"
        )
        self._db.commit()

    def put(self, message_id: str, info: ThreadInfo) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO email_threads VALUES (?, ?, ?, ?)",
                (message_id, info.email_message_id, " ".join(info.references), info.subject),
            )
            self._db.commit()

    def get(self, message_id: str) -> ThreadInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT email_message_id, refs, subject FROM email_threads WHERE message_id = ?", (message_id,)
            ).fetchone()
        if row is None:
            return None
        return ThreadInfo(row[0], tuple(row[1].split()), row[2])

    def close(self) -> None:
        with self._lock:
            self._db.close()
