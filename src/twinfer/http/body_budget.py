"""One budget for the request bodies every HTTP connection of the process holds at once, and giving the memory
back once they are gone.

A per-request size limit does not bound memory: ten slow 60 MB uploads are each under it and together held
972 MB (issue #14, finding 13). Connections take bytes from this budget as body chunks are buffered and give them
back when the request is answered or the connection drops; a chunk that does not fit is refused (503) instead of
growing the process.

Freed is not returned: bodies arrive as ~64 KB reads, which glibc serves from the heap, and a heap shrinks only
from its top, so 200 MB of answered bodies stayed in the process's RSS (measured: 140 -> 341 MB, and 341 MB a
minute later). Large declared bodies therefore go into an mmap (see `HttpConnection`), unmapped when freed. For
what is still held as heap chunks (small and chunked bodies), after a large release the budget asks glibc to hand
free pages back (`malloc_trim`, ~16 ms per 200 MB freed, holding malloc's lock), on a pool thread (ctypes releases
the GIL) and at most once per `TRIM_DELAY_S`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

TRIM_AFTER_BYTES = 32 * 1024 * 1024
TRIM_DELAY_S = 0.5


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class BodyBudget:
    """Bytes of request bodies held across connections; reactor-thread only, so no lock.

    `reactor` (optional) enables giving memory back: it schedules the trim and runs it on its thread pool."""

    __slots__ = ("limit", "held", "_released", "_reactor", "_trim", "_trim_pending")

    def __init__(self, limit: int, reactor: Any = None) -> None:
        self.limit = limit
        self.held = 0
        self._released = 0
        self._reactor = reactor
        self._trim = _malloc_trim() if reactor is not None else None
        self._trim_pending = False

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (and nothing reserved) when they do not fit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int, heap: bool = True) -> None:
        """`heap`: the bytes were held as heap chunks (an mmap'd body is unmapped when freed: nothing to trim)."""
        self.held -= size
        if not heap:
            return
        self._released += size
        if self._released >= TRIM_AFTER_BYTES and self._trim is not None and not self._trim_pending:
            self._trim_pending = True
            self._reactor.callLater(TRIM_DELAY_S, self._start_trim)  # later: the bodies' objects die first

    def _start_trim(self) -> None:
        from twisted.internet.threads import deferToThreadPool

        self._released = 0
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._trim, 0)
        d.addBoth(self._trim_done)

    def _trim_done(self, _: object) -> None:
        self._trim_pending = False
