"""The reactor the server runs on: Twisted's asyncio reactor with two per-event costs taken out.

Twisted's `AsyncioSelectorReactor` wraps every read and write readiness in `log.callWithLogger` (a legacy-logging
context: a context manager and dict copies per event, so that old-style `log.msg` calls made inside `doRead` carry
the protocol's `logPrefix`), and its `callFromThread` runs the callable through `callLater(0)`: a DelayedCall
pushed onto the timer heap, the loop's timer rescheduled, then `runUntilCurrent` with its log handler. Every model
result comes back to the reactor through `callFromThread`, and every request arrives as a read event, so both are
paid once or twice per request.

This subclass registers readers and writers without the logging context (twinfer logs with `twisted.logger`,
which does not read it; a failure inside `doRead` is still logged, by `_readOrWrite`) and hands `callFromThread`
calls straight to the loop's `call_soon_threadsafe`, in order, each under its own failure logging. Everything else
is Twisted's. Measured (perf_analyzer c=8, tiny model, 2 cores, the two servers up together, 3 interleaved
rounds, medians): KServe HTTP 5,924 vs 4,155 infer/s at 155 vs 196 us of server CPU a request; gRPC 6,350 vs 5,501
at 165 vs 178 us. The pipelined game protocol, whose reads carry many requests each, did not move (13.9k vs 13.3k
requests/s over 4 rounds, within the noise).
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.logger import Logger

log = Logger()


class TwinferReactor(AsyncioSelectorReactor):
    def addReader(self, reader: Any) -> None:
        if reader in self._readers or reader in self._continuousPolling._readers:
            return
        fd = reader.fileno()
        try:
            self._asyncioEventloop.add_reader(fd, self._readOrWrite, reader, True)
            self._readers[reader] = fd
        except OSError as e:
            self._unregisterFDInAsyncio(fd)
            if e.errno == errno.EPERM:  # epoll(7) refuses some descriptors (regular files): poll those
                self._continuousPolling.addReader(reader)
            else:
                raise

    def addWriter(self, writer: Any) -> None:
        if writer in self._writers or writer in self._continuousPolling._writers:
            return
        fd = writer.fileno()
        try:
            self._asyncioEventloop.add_writer(fd, self._readOrWrite, writer, False)
            self._writers[writer] = fd
        except PermissionError:
            self._unregisterFDInAsyncio(fd)
            self._continuousPolling.addWriter(writer)
        except BrokenPipeError:
            self._unregisterFDInAsyncio(fd)
        except BaseException:
            self._unregisterFDInAsyncio(fd)
            raise

    def callFromThread(self, callable: Any, *args: Any, **kwargs: Any) -> None:
        self._asyncioEventloop.call_soon_threadsafe(self._run_thread_call, callable, args, kwargs)

    def _run_thread_call(self, callable: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run on the loop. Calls made before the reactor starts run once it does (the loop queues them); calls
        that arrive after it has stopped are dropped, as Twisted's own queue never ran them: a second SIGTERM's
        `callFromThread(reactor.stop)` (the supervisor and the process group both send one) must not raise
        ReactorNotRunning while the loop winds down."""
        if self._startedBefore and not self.running:
            return
        try:
            callable(*args, **kwargs)
        except Exception:  # logged as a callLater's failure would be, and the loop goes on
            log.failure("while handling a call from a thread: {callable!r}", callable=callable)


def install(event_loop: Any) -> TwinferReactor:
    from twisted.internet.main import installReactor

    reactor = TwinferReactor(event_loop)
    installReactor(reactor)
    return reactor
