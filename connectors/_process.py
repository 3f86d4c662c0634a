"""Child processes that cannot outlive their parent, and free ports for them to listen on."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
from collections.abc import Callable

__all__ = ["die_with_parent", "free_port"]

PR_SET_PDEATHSIG = 1


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
