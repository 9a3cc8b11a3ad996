"""A worker's side of its link to the supervisor: notice the supervisor's death, and prove the reactor is alive.

The supervisor spawns each worker with two pipes at fixed descriptors (see supervisor.py):

- PARENT_FD: the supervisor holds its write end and never writes, so a read returns EOF exactly when the
  supervisor is gone, however it died (a SIGKILL leaves no time to forward anything). The worker then drains and
  exits instead of serving on as an orphan. On Linux the kernel is also asked for SIGTERM on the parent's death
  (PR_SET_PDEATHSIG), which also reaches a worker whose reactor is too busy to look at the pipe.
- HEARTBEAT_FD: the worker's reactor writes one byte per interval. A process that is stopped (SIGSTOP), wedged
  in a blocking call on the reactor thread or deadlocked stops writing, while the kernel keeps handing it its
  share of SO_REUSEPORT connections; the supervisor kills it and starts another.
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()
PARENT_FD = 3
HEARTBEAT_FD = 4
PR_SET_PDEATHSIG = 1


def heartbeat_interval(timeout_s: float) -> float:
    """Four beats per timeout, at most one a second: one late beat never looks like a hang."""
    return min(1.0, timeout_s / 4) if timeout_s > 0 else 1.0


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` when the parent dies (Linux); False where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class SupervisorLink:
    """Started once in a worker, before its reactor runs; `on_parent_gone` is called (once, on the reactor) when
    the supervisor dies."""

    def __init__(self, reactor: Any, timeout_s: float, on_parent_gone: Callable[[], None]) -> None:
        self._reactor = reactor
        self._on_parent_gone = on_parent_gone
        self._gone = False
        self._interval = heartbeat_interval(timeout_s)
        self._beat: LoopingCall | None = None

    @staticmethod
    def available() -> bool:
        """Both descriptors are the supervisor's pipes (not whatever a standalone start happens to have open)."""
        return _is_pipe(PARENT_FD) and _is_pipe(HEARTBEAT_FD)

    def start(self) -> None:
        die_with_parent()
        if os.getppid() == 1:  # the parent died before the prctl took effect
            self._reactor.callWhenRunning(self._parent_gone)
        threading.Thread(target=self._wait_for_eof, name="supervisor-link", daemon=True).start()
        os.set_blocking(HEARTBEAT_FD, False)
        self._beat = LoopingCall(self._send_beat)
        self._beat.clock = self._reactor
        self._beat.start(self._interval, now=True)

    def _wait_for_eof(self) -> None:
        try:
            while os.read(PARENT_FD, 4096):
                pass
        except OSError:
            pass
        self._reactor.callFromThread(self._parent_gone)

    def _send_beat(self) -> None:
        try:
            os.write(HEARTBEAT_FD, b".")
        except BlockingIOError:
            pass  # the supervisor is behind reading; it will see later beats
        except OSError:  # EPIPE: nobody reads any more
            self._parent_gone()

    def _parent_gone(self) -> None:
        if self._gone:
            return
        self._gone = True
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        log.warn("supervisor (parent) is gone: draining and exiting")
        self._on_parent_gone()
