"""The EventStore Protocol over ClickHouse: chdb in process (embedded default) or a server by URL.

Both write the same tables (`ddl.sql`: `events`, `feedback`) and run the same SQL. Inserts are
one columnar batch per table; idempotence by record id comes from the tables (ReplacingMergeTree
read with FINAL), so a retried batch may be inserted again without changing any count. Every
call blocks (chdb runs the engine in this process, clickhouse-driver is synchronous), so each
runs in a thread, one at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import SecretStr

from connectors.clickhouse.rows import COLUMNS, FEEDBACK_COLUMNS, feedback_to_columns, to_columns
from connectors.clickhouse.sql import PRESENT_COLUMNS, ddl, missing_columns, render
from schemas import ConversationEvent, Feedback

if TYPE_CHECKING:
    from connectors.protocols import EventStore

T = TypeVar("T")
AnalyticsRecord = ConversationEvent | Feedback

_ENTITY_SEPARATOR = "\x1f"  # array columns travel to chdb as one joined string per row (see ChdbEventStore)
_ARRAY_COLUMNS = ("entity_types", "knowledge_cited")


class EventStoreLocked(RuntimeError):
    """The chdb folder is held by another process (chdb allows one process per folder)."""


class _Serialized:
    """Runs a backend's blocking calls in a worker thread, one at a time (neither client is thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    # The EventStore Protocol; each backend supplies the blocking _execute/_insert_table/_query/_close.
    def _execute(self, statement: str) -> None:
        raise NotImplementedError

    def _present_columns(self) -> dict[str, set[str]]:
        present: dict[str, set[str]] = {}
        for row in self._query(PRESENT_COLUMNS, None):
            present.setdefault(row["table"], set()).add(row["name"])
        return present

    def _migrate(self) -> None:
        """Create the tables, then add the columns an older release's tables lack (`missing_columns`).

        18.16 has no ADD COLUMN IF NOT EXISTS: a column another process (a second sink) added between the
        look-up and the ALTER makes that ALTER fail, so a failed ALTER is forgiven when the column is there.
        """
        for statement in ddl():
            self._execute(statement)
        for statement in missing_columns(self._present_columns()):
            try:
                self._execute(statement)
            except Exception:
                if statement in missing_columns(self._present_columns()):
                    raise

    def _insert_table(self, table: str, columns: tuple[str, ...], batch: dict[str, list[Any]]) -> None:
        raise NotImplementedError

    def _insert(self, records: Sequence[AnalyticsRecord]) -> int:
        """Each table's rows as one columnar batch; every row of the call shares one insert time (the version)."""
        inserted_at = int(time.time())
        events = [r for r in records if isinstance(r, ConversationEvent)]
        feedback = [r for r in records if isinstance(r, Feedback)]
        if len(events) + len(feedback) != len(records):
            other = next(r for r in records if not isinstance(r, ConversationEvent | Feedback))
            raise TypeError(f"the analytics store does not take {type(other).__name__} records")
        if events:
            self._insert_table("events", COLUMNS, to_columns(events, inserted_at))
        if feedback:
            self._insert_table("feedback", FEEDBACK_COLUMNS, feedback_to_columns(feedback, inserted_at))
        return len(records)

    def _query(self, sql: str, parameters: dict[str, Any] | None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    async def migrate(self) -> None:
        await self._call(self._migrate)

    async def insert(self, records: Sequence[AnalyticsRecord]) -> int:
        if not records:
            return 0
        return await self._call(self._insert, records)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return await self._call(self._query, sql, parameters)

    async def close(self) -> None:
        await self._call(self._close)


_CHDB_LOCK = threading.Lock()
_CHDB_HOLDER: list[ChdbEventStore | None] = [None]
"""The shared store whose turn is held in this process, if any (a list: assigned from methods)."""
_EXIT_HOOK = [False]


class ChdbEventStore(_Serialized):
    """The events table in a chdb folder.

    chdb lets one process at a time hold a folder. Shared (the default), a call opens the folder
    under an exclusive file lock, so the sink, `analytics report` and `replay` take turns on one
    folder instead of failing. Opening costs about 50 ms of CPU, which a sink inserting five
    batches a second paid on every batch (a quarter of a core, the bench's profile showed), so a
    turn is held for the calls that follow: released once the store has been idle `idle_release_s`,
    and, when another process waits for it, at the latest `max_hold_s` after it was taken, so that
    process waits a few seconds at most. Not shared, the first call opens it for the store's
    lifetime: for one-process tools such as the benchmarks.
    """

    def __init__(self, path: Path, shared: bool = True, idle_release_s: float = 1.0, max_hold_s: float = 5.0) -> None:
        super().__init__()
        self._lock = _CHDB_LOCK  # one embedded chdb server per process: its stores take turns on it
        self.path = Path(path)
        self.shared = shared
        self.idle_release_s = idle_release_s
        self.max_hold_s = max_hold_s
        self._session: Any = None
        self._held: Any = None  # the lock file while this process has its turn
        self._held_since = 0.0
        self._last_call = 0.0
        self._release_timer: threading.Timer | None = None

    def _open(self) -> Any:
        if self._session is None:
            from chdb.session import Session

            if not _EXIT_HOOK[0]:  # registered after chdb's import, so it runs before chdb's own exit hooks
                atexit.register(_release_at_exit)
                _EXIT_HOOK[0] = True
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                session = Session(str(self.path))
            except RuntimeError as exc:
                # chdb's own message only says "Error initializing EmbeddedServer"; the lock says why.
                if _held_by_another_process(self.path / "status"):
                    raise EventStoreLocked(
                        f"the chdb folder {self.path} is held open by another process; chdb opens a folder from "
                        "one process at a time (stores opened with shared=True take turns)"
                    ) from exc
                raise
            # UInt64 as JSON numbers, not strings, so both backends return the same Python types.
            session.query("SET output_format_json_quote_64bit_integers = 0")
            self._session = session
        return self._session

    @contextlib.contextmanager
    def _turn(self) -> Iterator[Any]:
        """The session for one call (runs under `_Serialized`'s lock): this process's turn on the folder,
        taken now or kept from the calls before."""
        if not self.shared:
            yield self._open()
            return
        now = time.monotonic()
        if self._held is not None and now - self._held_since > self.max_hold_s:
            if someone_waits_for(self.path):
                self._release()  # let the waiting process have its turn before this call takes another
                time.sleep(0.05)  # flock is not fair: without a pause this call would take the lock straight back
            else:
                # nobody waits: keep the turn. Reopening the folder costs more the more it holds (the sink's
                # CPU grew twelvefold over a 20,000-turn run), so a turn is given up only when asked for.
                self._held_since = now
        if self._held is None:
            holder = _CHDB_HOLDER[0]
            if holder is not None and holder is not self:
                holder._release()  # chdb serves one folder per process; another store's held turn ends
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.parent / f".{self.path.name}.lock", "a+b")  # noqa: SIM115 - held across calls
            wait_for_turn(self.path, lock)
            self._held, self._held_since = lock, time.monotonic()
            _CHDB_HOLDER[0] = self
        try:
            yield self._open()
        except BaseException:
            self._release()  # a failed call leaves the folder to others rather than a session in doubt
            raise
        self._last_call = time.monotonic()
        self._schedule_release()

    def _schedule_release(self) -> None:
        if self._release_timer is None:
            self._release_timer = threading.Timer(self.idle_release_s, self._release_when_idle)
            self._release_timer.daemon = True
            self._release_timer.start()

    def _release_when_idle(self) -> None:
        with self._lock:  # chdb is not thread-safe: the release waits for a running call
            self._release_timer = None
            idle = time.monotonic() - self._last_call
            if self._held is None:
                return
            if idle >= self.idle_release_s:
                self._release()
            else:
                self._release_timer = threading.Timer(self.idle_release_s - idle, self._release_when_idle)
                self._release_timer.daemon = True
                self._release_timer.start()

    def _release(self) -> None:
        """Close the session and give the folder's lock back (callers hold `_Serialized`'s lock)."""
        self._close_session()
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held.close()
            self._held = None
        if _CHDB_HOLDER[0] is self:
            _CHDB_HOLDER[0] = None

    def _execute(self, statement: str) -> None:
        with self._turn() as session:
            session.query(statement)

    def _insert_table(self, table: str, columns: tuple[str, ...], batch: dict[str, list[Any]]) -> None:
        for name in _ARRAY_COLUMNS:
            if name in batch:
                batch[name] = [_ENTITY_SEPARATOR.join(values) for values in batch[name]]
        select = ", ".join(_CHDB_SELECT.get(name, name) for name in columns)
        with self._turn() as session:
            # Python(batch) reads the local variable `batch` of this frame: a dict of columns, no copy to text.
            session.query(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM Python(batch)")

    def _query(self, sql: str, parameters: dict[str, Any] | None) -> list[dict[str, Any]]:
        with self._turn() as session:
            result = session.query(render(sql, parameters), "JSON")
            text = result.bytes()
        if not text:
            return []
        answer = json.loads(text)
        types = {column["name"]: column["type"] for column in answer["meta"]}
        return [{name: _from_json(value, types[name]) for name, value in row.items()} for row in answer["data"]]

    def _close(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        self._release()

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


_CHDB_SELECT = {
    "timestamp": "toDateTime(timestamp, 'UTC')",
    "at": "toDateTime(at, 'UTC')",
    "inserted_at": "toDateTime(inserted_at, 'UTC')",
    "entity_types": "arrayFilter(t -> t != '', splitByChar('\\x1F', entity_types))",
    "knowledge_cited": "arrayFilter(t -> t != '', splitByChar('\\x1F', knowledge_cited))",
}


class ClickHouseEventStore(_Serialized):
    """The events table on a ClickHouse server over the native protocol (clickhouse-driver; 18.16 works)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        from clickhouse_driver import Client

        self._client = Client.from_url(url)  # connects on first use, reconnects after a failure

    def _execute(self, statement: str) -> None:
        self._client.execute(statement)

    def _insert_table(self, table: str, columns: tuple[str, ...], batch: dict[str, list[Any]]) -> None:
        for name in ("timestamp", "at", "inserted_at"):
            if name in batch:
                batch[name] = [datetime.fromtimestamp(seconds, UTC) for seconds in batch[name]]
        self._client.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES", [batch[name] for name in columns], columnar=True
        )

    def _query(self, sql: str, parameters: dict[str, Any] | None) -> list[dict[str, Any]]:
        rows, columns = self._client.execute(render(sql, parameters), with_column_types=True)
        names = [name for name, _ in columns]
        return [{name: _normalise(value) for name, value in zip(names, row, strict=True)} for row in rows]

    def _close(self) -> None:
        self._client.disconnect()


class EventStoreSettings(Protocol):
    """What locating the analytics store needs of the application's settings (passed in, never imported)."""

    @property
    def clickhouse_url(self) -> SecretStr | None: ...

    @property
    def data_dir(self) -> Path: ...


def open_event_store(settings: EventStoreSettings) -> EventStore:
    """The server named by settings.clickhouse_url, else chdb in data_dir/chdb."""
    if settings.clickhouse_url is not None:
        return ClickHouseEventStore(settings.clickhouse_url.get_secret_value())
    return ChdbEventStore(settings.data_dir / "chdb")


def _release_at_exit() -> None:
    """Close a held chdb turn before the interpreter winds down: a store left open (a script without
    `close`) was otherwise closed by its idle timer's thread during shutdown, which crashed now and
    then (SIGSEGV)."""
    with _CHDB_LOCK:
        holder = _CHDB_HOLDER[0]
        if holder is not None:
            holder._close()


def _want_files(folder: Path) -> Iterator[Path]:
    return folder.parent.glob(f".{folder.name}.want.*")


def wait_for_turn(folder: Path, lock: Any) -> None:
    """Take the chdb folder's flock on `lock`, saying so while waiting (`someone_waits_for`), so that a
    busy holder gives its turn up after `max_hold_s` instead of keeping it."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    want = folder.parent / f".{folder.name}.want.{os.getpid()}.{threading.get_ident()}"
    want.touch()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
    finally:
        want.unlink(missing_ok=True)


def someone_waits_for(folder: Path) -> bool:
    """Whether a live process is waiting in `wait_for_turn` for this folder (a dead waiter's file is removed)."""
    for want in _want_files(folder):
        try:
            os.kill(int(want.name.split(".")[-2]), 0)
        except ProcessLookupError:
            want.unlink(missing_ok=True)
            continue
        except (ValueError, PermissionError):
            pass  # not ours to judge: count it as waiting
        return True
    return False


def _held_by_another_process(status_file: Path) -> bool:
    """Whether a ClickHouse engine holds this folder: it keeps an exclusive flock on `status` while open."""
    try:
        fd = os.open(status_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _from_json(value: Any, clickhouse_type: str) -> Any:
    """chdb's JSON output → the Python values clickhouse-driver gives (aware UTC datetimes, None for nan)."""
    if value is not None and clickhouse_type.startswith("DateTime"):
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return _normalise(value)


def _normalise(value: Any) -> Any:
    """nan (an empty average, 0/0) → None; naive datetimes are UTC."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    return value
