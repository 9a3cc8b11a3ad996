"""Where blocking work runs: file I/O and model loading on the reactor's thread pool, model execution on each
version's own instance threads. Injected into the repository so tests can run everything synchronously."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class InstancePool(Protocol):
    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def stop(self) -> None: ...


class ThreadRunner(Protocol):
    def run_io(self, fn: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def instance_pool(self, name: str, size: int) -> InstancePool: ...


class _ThreadInstancePool:
    def __init__(self, reactor: Any, name: str, size: int) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=size, maxthreads=size, name=name)
        self._pool.start()

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def stop(self) -> None:
        self._pool.stop()


class ReactorThreads:
    """The production runner: real threads, results delivered back on the reactor."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def run_io(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def instance_pool(self, name: str, size: int) -> InstancePool:
        return _ThreadInstancePool(self._reactor, name, size)
