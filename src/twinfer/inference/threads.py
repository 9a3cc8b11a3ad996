"""Where blocking work runs: file I/O and model loading on the reactor's thread pool, model execution on each
version's own instance threads. Injected into the repository so tests can run everything synchronously."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

T = TypeVar("T")


class InstancePool(Protocol):
    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def stop(self, wait: bool = True) -> None: ...


class ThreadRunner(Protocol):
    def run_io(self, fn: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def instance_pool(self, name: str, size: int) -> InstancePool: ...


class _ThreadInstancePool:
    """`size` threads taking model runs from one queue; each result goes back to the reactor in one
    callFromThread.

    Deliberately not Twisted's ThreadPool: its per-task Team coordination and logging-context wrappers cost
    about 10 us of server CPU per request (measured: perf_analyzer HTTP c=8 on the tiny model, 141 -> 135 us per
    request; wrk c=8 104 -> 93 us and 9,900 -> 11,000 infer/s), more than running the tiny model itself (~6 us). Model
    runs need none of it: no context, a fixed number of threads for the version's life.
    """

    def __init__(self, reactor: Any, name: str, size: int) -> None:
        self._reactor = reactor
        self._queue: queue.SimpleQueue[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._queue.put((d, fn, args))
        return d

    def _work(self) -> None:
        call_from_thread = self._reactor.callFromThread
        while (item := self._queue.get()) is not None:
            d, fn, args = item
            try:
                result = fn(*args)
            except BaseException:  # noqa: BLE001 - handed to the Deferred, as deferToThread does
                call_from_thread(d.errback, Failure())
            else:
                call_from_thread(d.callback, result)

    def stop(self, wait: bool = True) -> None:
        """Let queued runs finish, then end the threads (waiting for them, as ThreadPool.stop did, unless `wait` is
        False: a python model's execute that never returns must not hold up an unload or a shutdown)."""
        for _ in self._threads:
            self._queue.put(None)
        if not wait:
            return
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()


class ReactorThreads:
    """The production runner: real threads, results delivered back on the reactor."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._timer: Any = None

    def run_io(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def instance_pool(self, name: str, size: int) -> InstancePool:
        return _ThreadInstancePool(self._reactor, name, size)

    def precise_call_later(self, delay_s: float, fn: Callable[[], Any]) -> Any:
        """callLater to a fraction of a millisecond, for the batchers' queue delays (inference.precise_timer)."""
        if self._timer is None:
            from twinfer.inference.precise_timer import PreciseTimer

            self._timer = PreciseTimer(self._reactor)
        return self._timer.call_later(delay_s, fn)
