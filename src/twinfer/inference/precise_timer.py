"""Sub-millisecond timers for the batcher's max_queue_delay.

An event loop times out in whole milliseconds: measured here, uvloop fires `call_later(0.0005)` at once (rounded to
0 ms) and 1.5 ms at 2.1 ms; asyncio's selector loop fires 0.5 ms at 1.15 ms. A Triton config's
`max_queue_delay_microseconds: 500` therefore either never holds a batch (MLServer's early timer,
SeldonIO/MLServer#1936, batches not full) or holds it past its maximum. This timer waits on its own thread with a
condition variable (nanosecond timeouts; it wakes ~0.1 ms late here) and hands the call to the reactor with
`callFromThread`, so the batcher's hold ends when the config says.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any


class PreciseCall:
    """A pending call: `cancel()` and `active()` like Twisted's IDelayedCall, used on the reactor thread only."""

    __slots__ = ("_fn", "_cancelled", "_fired")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._cancelled = False
        self._fired = False

    def active(self) -> bool:
        return not (self._cancelled or self._fired)

    def cancel(self) -> None:
        self._cancelled = True

    def _fire(self) -> None:  # on the reactor thread
        if not self._cancelled and not self._fired:
            self._fired = True
            self._fn()


class PreciseTimer:
    """`call_later(seconds, fn)` with fn run on the reactor thread; one daemon thread for the whole process."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, PreciseCall]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call_later(self, delay_s: float, fn: Callable[[], Any]) -> PreciseCall:
        call = PreciseCall(fn)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(delay_s, 0.0), next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="precise-timer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return call

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, call = self._heap[0]
                remaining = at - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                heapq.heappop(self._heap)
            if call.active():  # a cancelled call costs the reactor nothing
                self._reactor.callFromThread(call._fire)
