"""Issue #17 finding 5, the supervisor's side in isolation: when a worker counts as hung, and that it is killed
once, counted, and not before its first heartbeat's grace."""

from __future__ import annotations

import signal
from types import SimpleNamespace

from twinfer.supervisor import FIRST_HEARTBEAT_GRACE_S, Worker
from twinfer.worker_link import heartbeat_interval


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, sig: int) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(sig)


def worker() -> Worker:
    supervisor = SimpleNamespace(workers=[], stopping=False)
    w = Worker(supervisor, 0)
    supervisor.workers.append(w)
    w.process, w.started_at = FakeProcess(4242), 100.0
    return w


def test_a_worker_that_stops_beating_is_killed_once_and_counted():
    w = worker()
    w.last_beat = 110.0
    w.check_alive(2.0, 111.9)
    assert w.process.signals == [] and w.hung_kills == 0
    w.check_alive(2.0, 112.1)
    assert w.process.signals == [signal.SIGKILL] and w.hung_kills == 1
    w.check_alive(2.0, 130.0)  # still dying: not killed (or counted) again
    assert w.process.signals == [signal.SIGKILL] and w.hung_kills == 1


def test_before_its_first_beat_a_worker_gets_the_start_up_grace():
    w = worker()
    w.check_alive(2.0, 100.0 + 2.0 + FIRST_HEARTBEAT_GRACE_S - 0.1)
    assert w.process.signals == []
    w.check_alive(2.0, 100.0 + 2.0 + FIRST_HEARTBEAT_GRACE_S + 0.1)
    assert w.process.signals == [signal.SIGKILL]


def test_four_beats_fit_in_a_timeout_and_at_most_one_a_second():
    assert heartbeat_interval(2.0) == 0.5 and heartbeat_interval(10.0) == 1.0 and heartbeat_interval(0) == 1.0
