"""Virtual users and arrival schedules on one Twisted reactor.

Closed model: each user runs its steps in a loop, a request waits for the previous answer. Open model: requests
start at their intended times from a schedule, on whichever connection is free (more are opened up to a cap);
their latency counts from the intended time, so queueing anywhere shows up (no coordinated omission).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from twinfer.bot.drivers import CONNECTORS
from twinfer.bot.recorder import Recorder
from twinfer.bot.scenario import Scenario
from twinfer.bot.steps import STEPS

MAX_OPEN_CONNECTIONS = 512


DEAD = "connection dead"  # what a step returns when its connection must be replaced


def error_kind(failure: Failure) -> str:
    """The error breakdown's key: a wire code name, an HTTP status, a gRPC status, or the exception's type."""
    from twisted.internet.defer import CancelledError
    from twisted.internet.defer import TimeoutError as DeferTimeout

    from twinfer.client.errors import SessionClosed

    error = failure.value
    if isinstance(error, (DeferTimeout, CancelledError)):
        return "timeout"
    if isinstance(error, SessionClosed):
        return "session closed"
    kind = getattr(error, "kind", None)
    if kind:
        return kind
    code = getattr(error, "code", None)
    if isinstance(code, int):
        from twinfer.protocol.error_codes import code_name

        return code_name(code)
    return type(error).__name__


def connection_is_dead(failure: Failure) -> bool:
    from twisted.internet.defer import CancelledError
    from twisted.internet.defer import TimeoutError as DeferTimeout
    from twisted.internet.error import ConnectError, ConnectionClosed

    from twinfer.bot.drivers import RequestError
    from twinfer.client.errors import SessionClosed

    error = failure.value
    return isinstance(error, (SessionClosed, ConnectionClosed, ConnectError, DeferTimeout, CancelledError,
                              ConnectionError)) or (isinstance(error, RequestError) and error.kind == "connection lost")


class Engine:
    def __init__(self, reactor: Any, scenario: Scenario, recorder: Recorder, seed: int) -> None:
        self.reactor = reactor
        self.scenario = scenario
        self.recorder = recorder
        self.rng = np.random.default_rng(seed)
        self.host, self.port = scenario.host_port
        self.stopping = False
        self.active_users = 0  # closed model: user loops running
        self._deadlines: dict[Deferred, float] = {}
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = reactor

    def _sweep(self) -> None:
        """Cancel requests past their timeout. One sweep every 100 ms instead of a timer per request: a timer per
        request (callLater + cancel) was the bot's largest cost after the socket calls themselves."""
        now = self.now()
        for d in [d for d, deadline in self._deadlines.items() if deadline <= now]:
            self._deadlines.pop(d, None)
            d.cancel()

    def track(self, d: Deferred) -> Deferred:
        """Give `d` the scenario's timeout (fails with CancelledError, reported as `timeout`)."""
        if not self._sweeper.running:
            self._sweeper.start(0.1, now=False)
        self._deadlines[d] = self.now() + self.scenario.timeout

        def untrack(result: object) -> object:
            self._deadlines.pop(d, None)
            return result

        return d.addBoth(untrack)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered (every request is tracked for its timeout)."""
        return len(self._deadlines)

    def stop(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()

    def now(self) -> float:
        return self.reactor.seconds()

    def connect(self) -> Deferred:
        s = self.scenario
        coro = CONNECTORS[s.protocol](self.reactor, self.host, self.port, model=s.model, token=s.token, rng=self.rng,
                                      timeout=s.timeout, frame_size=s.frame_size)
        return Deferred.fromCoroutine(coro).addTimeout(s.timeout, self.reactor)

    def timed(self, d: Deferred, started: float) -> Deferred:
        """Record the outcome of one request that was meant to start at `started`."""

        def ok(_: object) -> None:
            now = self.now()
            self.recorder.success(now, now - started)

        def failed(failure: Failure) -> str | None:
            self.recorder.error(self.now(), error_kind(failure))
            return DEAD if connection_is_dead(failure) else None

        return self.track(d).addCallbacks(ok, failed)

    # --- closed model ---------------------------------------------------------------------------------------------

    @inlineCallbacks
    def user(self, index: int, end: float):
        self.active_users += 1
        try:
            yield self._user_loop(end)
        finally:
            self.active_users -= 1

    @inlineCallbacks
    def _user_loop(self, end: float):
        connection = None
        while self.now() < end and not self.stopping:
            if connection is None:
                try:
                    connection = yield self.connect()
                except Exception as exc:  # noqa: BLE001 - counted, then retried
                    self.recorder.error(self.now(), error_kind(Failure(exc)))
                    yield deferLater(self.reactor, 0.1, lambda: None)
                    continue
            for step in self.scenario.steps:
                if self.now() >= end or self.stopping:
                    break
                outcome = yield STEPS[step.command](self, connection, step.args)
                if outcome == DEAD:
                    connection.close()
                    connection = None
                    self.recorder.reconnects += 1
                    break
        if connection is not None:
            connection.close()

    # --- open model -----------------------------------------------------------------------------------------------

    def open_load(self, times: Any, start: float) -> Deferred:
        """Start a request at each intended time; fires when every request has finished."""
        idle: deque[Any] = deque()
        waiting: deque[float] = deque()
        state = {"open": 0, "running": 0, "ended": False}
        finished: Deferred = Deferred()

        def maybe_done() -> None:
            if state["ended"] and state["running"] == 0 and not waiting and not finished.called:
                for connection in idle:
                    connection.close()
                finished.callback(None)

        def run(connection: Any, intended: float) -> None:
            state["running"] += 1
            if intended >= self.recorder.start:  # warm-up requests are counted nowhere
                self.recorder.sent += 1
            d = self.timed(connection.infer(), intended)

            def done(outcome: object) -> None:
                state["running"] -= 1
                if outcome == DEAD:
                    connection.close()
                    state["open"] -= 1
                    self.recorder.reconnects += 1
                elif waiting:
                    run(connection, waiting.popleft())
                    return
                else:
                    idle.append(connection)
                maybe_done()

            d.addBoth(done)

        def opened(connection: Any) -> None:
            if waiting:
                run(connection, waiting.popleft())
            else:
                idle.append(connection)
                maybe_done()

        def open_failed(failure: Failure) -> None:
            state["open"] -= 1
            if waiting:  # the request that asked for this connection fails; later ones try again
                self.recorder.error(self.now(), error_kind(failure))
                waiting.popleft()
            maybe_done()

        def arrive(intended: float) -> None:
            if intended >= self.recorder.start:
                self.recorder.scheduled += 1
                self.recorder.scheduled_at[int(intended - self.recorder.start)] += 1
            if idle:
                run(idle.popleft(), intended)
            else:
                waiting.append(intended)
                if state["open"] < MAX_OPEN_CONNECTIONS:
                    state["open"] += 1
                    self.connect().addCallbacks(opened, open_failed)

        def schedule_next() -> None:
            if self.stopping:
                state["ended"] = True
                maybe_done()
                return
            try:
                t = next(times)
            except StopIteration:
                state["ended"] = True
                maybe_done()
                return
            when = start + t

            def fire() -> None:
                arrive(when)
                schedule_next()

            self.reactor.callLater(max(0.0, when - self.now()), fire)

        schedule_next()
        return finished
