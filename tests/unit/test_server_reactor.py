"""twinfer.server.reactor.TwinferReactor: Twisted's asyncio reactor with readers registered without the legacy
logging context and callFromThread handed straight to the loop. What must hold is what Twisted promised: calls
from threads run on the reactor thread, in order, one's failure logged without losing the next; a reader is read
when data arrives, and one whose doRead raises is logged and disconnected. Each test builds its own reactor on its
own loop (never installed), so nothing global changes."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.logger import globalLogPublisher

from twinfer.server.reactor import TwinferReactor


@pytest.fixture
def loop_and_reactor():
    loop = asyncio.new_event_loop()
    reactor = TwinferReactor(loop)
    yield loop, reactor
    loop.close()


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_calls_from_threads_run_on_the_loop_thread_in_order(loop_and_reactor):
    loop, reactor = loop_and_reactor
    seen: list[tuple[int, int]] = []
    done = loop.create_future()

    def record(i: int) -> None:
        seen.append((i, threading.get_ident()))
        if i == 199:
            done.set_result(None)

    def worker() -> None:
        for i in range(200):
            reactor.callFromThread(record, i)

    thread = threading.Thread(target=worker)
    thread.start()
    loop.run_until_complete(asyncio.wait_for(done, 10))
    thread.join()
    assert [i for i, _ in seen] == list(range(200))
    assert {ident for _, ident in seen} == {threading.get_ident()}  # this test runs the loop: the reactor thread


def test_a_failing_call_from_a_thread_is_logged_and_the_next_still_runs(loop_and_reactor, logged):
    loop, reactor = loop_and_reactor
    done = loop.create_future()

    def broken() -> None:
        raise ValueError("boom")

    thread = threading.Thread(target=lambda: (reactor.callFromThread(broken),
                                              reactor.callFromThread(done.set_result, "after")))
    thread.start()
    assert loop.run_until_complete(asyncio.wait_for(done, 10)) == "after"
    thread.join()
    failures = [e for e in logged if e.get("log_failure") is not None]
    assert len(failures) == 1 and isinstance(failures[0]["log_failure"].value, ValueError)
    assert "call from a thread" in failures[0]["log_format"]


class _Reader(FileDescriptor):
    def __init__(self, reactor, sock: socket.socket, on_read) -> None:
        super().__init__(reactor)
        self.sock = sock
        self.on_read = on_read
        self.lost: list[object] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self):
        return self.on_read(self.sock.recv(4096))

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)
        super().connectionLost(reason)


def test_a_reader_is_read_without_the_logging_context(loop_and_reactor):
    loop, reactor = loop_and_reactor
    a, b = socket.socketpair()
    got = loop.create_future()
    reader = _Reader(reactor, a, lambda data: got.done() or got.set_result(data))
    reactor.addReader(reader)
    assert reader in reactor.getReaders()
    reactor.addReader(reader)  # twice is once
    b.send(b"frame")
    assert loop.run_until_complete(asyncio.wait_for(got, 10)) == b"frame"
    reactor.removeReader(reader)
    assert reader not in reactor.getReaders()
    a.close(), b.close()


def test_a_reader_whose_doread_raises_is_logged_and_disconnected(loop_and_reactor, logged):
    loop, reactor = loop_and_reactor
    a, b = socket.socketpair()

    def explode(data: bytes) -> None:
        raise RuntimeError("bad bytes")

    reader = _Reader(reactor, a, explode)
    reactor.addReader(reader)
    b.send(b"x")
    loop.run_until_complete(asyncio.sleep(0))  # selector poll
    deadline = loop.time() + 10
    while not reader.lost and loop.time() < deadline:
        loop.run_until_complete(asyncio.sleep(0.01))
    assert reader.lost, "the failing reader was not disconnected"
    assert reader not in reactor.getReaders()
    assert any(isinstance(getattr(e.get("log_failure"), "value", None), RuntimeError) for e in logged)
    a.close(), b.close()


def test_writers_are_registered_and_written(loop_and_reactor):
    loop, reactor = loop_and_reactor
    a, b = socket.socketpair()
    wrote = loop.create_future()

    class Writer(_Reader):
        def doWrite(self):
            self.sock.send(b"out")
            reactor.removeWriter(self)
            wrote.set_result(True)

    writer = Writer(reactor, a, lambda data: None)
    reactor.addWriter(writer)
    assert writer in reactor.getWriters()
    assert loop.run_until_complete(asyncio.wait_for(wrote, 10))
    assert b.recv(16) == b"out"
    a.close(), b.close()


def test_calls_before_the_reactor_runs_wait_for_it_and_calls_after_it_stopped_are_dropped(loop_and_reactor, logged):
    """Twisted's queue runs calls made before `run` once it starts and never runs the ones that come after it
    stopped. The direct path must do the same: a worker sent SIGTERM by both its supervisor and the process group
    got two callFromThread(reactor.stop), and the second raised ReactorNotRunning (logged as critical) while the
    loop wound down."""
    loop, reactor = loop_and_reactor
    ran: list[str] = []
    reactor.callFromThread(ran.append, "before run")
    reactor.callWhenRunning(reactor.stop)
    reactor.run(installSignalHandlers=False)
    assert ran == ["before run"]
    thread = threading.Thread(target=lambda: (reactor.callFromThread(reactor.stop),
                                              reactor.callFromThread(ran.append, "after stop")))
    thread.start()
    thread.join()
    loop.run_until_complete(asyncio.sleep(0.05))  # the loop turns: the queued calls are taken and dropped
    assert ran == ["before run"]
    assert not [e for e in logged if e.get("log_failure") is not None]
