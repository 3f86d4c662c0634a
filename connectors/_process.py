"""Child processes that cannot outlive their parent, and free ports for them to listen on."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["alive", "bound_to_parent", "die_with_parent", "free_port", "spawn", "stop"]

PR_SET_PDEATHSIG = 1


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent(signal_number: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: the kernel sends the child `signal_number` when its parent dies, even by SIGKILL.

    It runs in the child after Popen's setuid, so the death signal survives a change of user.
    """

    def bind() -> None:
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal_number)

    return bind


def bound_to_parent(
    argv: Sequence[str], signal_number: int = signal.SIGTERM
) -> tuple[list[str], Callable[[], None] | None]:
    """`argv` (and a `preexec_fn`, or None) for a child that gets `signal_number` when this process dies.

    Through util-linux's `setpriv --pdeathsig` when it is installed: then no Python code runs between
    fork and exec, which a process with threads (gRPC's, librdkafka's) needs — gRPC's fork handlers
    abort a child forked while its threads are busy. Else the `preexec_fn` of `die_with_parent`.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return list(argv), die_with_parent(signal_number)
    name = signal.Signals(signal_number).name.removeprefix("SIG")
    return [setpriv, "--pdeathsig", name, "--", *argv], None


def spawn(
    argv: Sequence[str], log_file: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child that ends when this process ends, logging to a file when given."""
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    command, preexec = bound_to_parent(argv, signal.SIGTERM)
    return subprocess.Popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=preexec,
        close_fds=True,
        process_group=0,  # a terminal's Ctrl-C reaches only the parent, which stops children in order
    )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it will not go."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        # a killed process goes, but reaping a large one on a loaded machine took more than 5 s (bench runs)
        process.wait(timeout=30)
