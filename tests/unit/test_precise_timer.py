"""inference.precise_timer: calls fire in time order, not before their time, on the reactor (callFromThread), and
a cancelled call never runs."""

from __future__ import annotations

import queue
import threading
import time

from twinfer.inference.precise_timer import PreciseTimer


class ThreadReactor:
    """Only what the timer uses: callFromThread, here a queue this test drains as the reactor would."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, fn, *args) -> None:  # noqa: N802 - Twisted's name
        assert threading.current_thread().name == "precise-timer"
        self.calls.put((fn, args))

    def run_one(self, timeout: float = 5.0) -> None:
        fn, args = self.calls.get(timeout=timeout)
        fn(*args)


def test_calls_fire_in_time_order_and_never_early():
    reactor = ThreadReactor()
    timer = PreciseTimer(reactor)
    fired: list[tuple[str, float]] = []
    start = time.monotonic()
    # "late" far enough ahead that a stalled test process (CI on 2 busy cores) cannot let it fall due before
    # "soon" is even scheduled: then it would rightly fire first
    timer.call_later(0.25, lambda: fired.append(("late", time.monotonic() - start)))
    timer.call_later(0.001, lambda: fired.append(("soon", time.monotonic() - start)))
    reactor.run_one()
    reactor.run_one()
    assert [name for name, _ in fired] == ["soon", "late"]
    assert fired[0][1] >= 0.001 and fired[1][1] >= 0.25


def test_a_cancelled_call_does_not_run_and_reports_inactive():
    reactor = ThreadReactor()
    timer = PreciseTimer(reactor)
    fired: list[str] = []
    cancelled = timer.call_later(0.001, lambda: fired.append("cancelled"))
    kept = timer.call_later(0.002, lambda: fired.append("kept"))
    cancelled.cancel()
    assert not cancelled.active() and kept.active()
    reactor.run_one()
    assert fired == ["kept"] and not kept.active()
    assert reactor.calls.empty()
