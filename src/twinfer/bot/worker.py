"""One bot worker process: its own reactor (asyncio, for gRPC), its share of users or of the arrival rate,
progress every second and its full results at the end, through a multiprocessing queue."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from twinfer.bot import schedule
from twinfer.bot.engine import Engine, error_kind
from twinfer.bot.recorder import Recorder
from twinfer.bot.scenario import Scenario


def share(total: int, index: int, count: int) -> int:
    return total // count + (1 if index < total % count else 0)


def rate_function(s: Scenario) -> schedule.RateFn:
    if s.test == "spike":
        return schedule.spike(s.rate or 100.0, s.spike.factor, s.spike.at * s.duration, s.spike.length * s.duration)
    if s.test == "stress":
        return schedule.steps(s.stress.start_rate, s.stress.factor, s.stress.step, s.stress.max_rate)
    if s.stages:
        return schedule.staged([(st.duration, st.rate or 0.0) for st in s.stages], s.stages[0].rate or 0.0)
    return schedule.constant(s.rate)


def _timed_op(engine: Engine, d: Deferred, what: str) -> Deferred:
    started = engine.now()

    def ok(result: Any) -> Any:
        engine.recorder.success(engine.now(), engine.now() - started)
        return result

    def failed(failure: Failure) -> None:
        engine.recorder.error(engine.now(), f"{what}: {error_kind(failure)}")

    return engine.track(d).addCallbacks(ok, failed)


@inlineCallbacks
def concurrency(engine: Engine, index: int, count: int):
    """Simultaneous connects (+ a request each), duplicate logins, racing stream open/close: nothing may hang."""
    s = engine.scenario
    n = share(s.concurrency.connections, index, count)
    results = yield DeferredList([_timed_op(engine, engine.connect(), "connect") for _ in range(n)])
    connections = [r for ok, r in results if ok and r is not None]
    yield DeferredList([_timed_op(engine, c.infer(), "infer") for c in connections])
    engine.recorder.event(engine.now(), f"{len(connections)}/{n} simultaneous connections served")
    if s.protocol in ("tcp", "udp"):
        from twinfer.client.errors import SessionClosed
        from twinfer.client.twisted_client import connect

        host, port = s.host_port
        pairs = share(s.concurrency.duplicate_logins, index, count)
        kicked = 0
        for i in range(pairs):
            user = s.token or f"bot-dup-{index}-{i}-{time.monotonic_ns()}"
            first = yield _timed_op(engine, connect(engine.reactor, host, port, user), "duplicate login")
            second = yield _timed_op(engine, connect(engine.reactor, host, port, user), "duplicate login")
            if first is None or second is None:
                continue
            try:
                yield engine.track(first.ping())
            except SessionClosed:
                kicked += 1  # the earlier session was kicked, as it must be
            except Exception as exc:  # noqa: BLE001 - a hang or another failure
                engine.recorder.error(engine.now(), f"duplicate login: {error_kind(Failure(exc))}")
            else:
                engine.recorder.error(engine.now(), "duplicate login did not kick the first session")
            second.close()
        engine.recorder.event(engine.now(), f"{kicked}/{pairs} duplicate logins kicked the earlier session")
        streams = share(s.concurrency.streams, index, count)
        if streams and connections and s.protocol == "udp":  # streams need an image model
            from twinfer.protocol import game_pb2

            protocol = connections[0].protocol

            def open_close(k: int) -> Deferred:
                request = game_pb2.OpenStreamRequest(model=s.model, width=8, height=8)
                d = protocol.open_stream(request)
                d.addCallback(lambda info: protocol.close_stream(info.stream_id))
                return _timed_op(engine, d, "stream open/close")

            yield DeferredList([open_close(k) for k in range(streams)])
    for c in connections:
        c.close()


def warmed(rate: schedule.RateFn, warmup: float) -> schedule.RateFn:
    """The measured schedule, preceded by `warmup` seconds at its starting rate."""
    return lambda t: rate(max(0.0, t - warmup))


@inlineCallbacks
def run_load(reactor: Any, engine: Engine, index: int, count: int, start: float):
    """`start` is the measured run's start; load begins `warmup` seconds before it (but for concurrency tests)."""
    s = engine.scenario
    end = start + s.duration
    if s.test == "concurrency":
        yield concurrency(engine, index, count)
    elif s.open_model:
        times = schedule.arrivals(warmed(rate_function(s), s.warmup), s.warmup + s.duration, share=1.0 / count,
                                  phase=(index + 1) / count)
        yield engine.open_load(times, start - s.warmup)
    else:
        users = share(s.users, index, count)
        ramp = min(1.0, s.duration / 10)
        tasks = [deferLater(reactor, ramp * i / max(users, 1), engine.user, i, end) for i in range(users)]
        yield DeferredList(tasks)


def worker_main(scenario_json: str, index: int, count: int, start_at: float, queue: Any,
                stop: Any = None) -> None:
    from twinfer.server.run import install_asyncio_reactor

    install_asyncio_reactor("auto")  # uvloop when installed: the load generator's own cost per request drops too
    from twisted.internet import reactor

    scenario = Scenario.model_validate_json(scenario_json)
    recorder = Recorder(start_at)
    engine = Engine(reactor, scenario, recorder, seed=index)

    def progress() -> None:
        if stop is not None and stop.is_set() and not engine.stopping:
            engine.stopping = True  # the coordinator saw enough (a stress run broke its thresholds)
            recorder.event(reactor.seconds(), "stopped early by the coordinator")
        recorder.sample(reactor.seconds() - 0.5, engine.active_users, engine.in_flight)  # for the second ending now
        second = int(reactor.seconds() - start_at) - 1
        if second >= 0:
            h = recorder.per_second.get(second)
            queue.put(("progress", index, second, recorder.ok.get(second, 0), recorder.failed.get(second, 0),
                       h.percentile_ms(50) if h else 0.0, h.percentile_ms(99) if h else 0.0))

    ticker = LoopingCall(progress)

    def begin() -> None:
        if scenario.test == "concurrency":
            return reactor.callLater(max(0.0, start_at - time.time()), start_load)
        start_load()

    def start_load() -> None:
        ticker.start(1.0, now=False)
        d = run_load(reactor, engine, index, count, start_at)
        d.addErrback(lambda f: recorder.event(reactor.seconds(), f"worker failed: {f.getErrorMessage()}"))
        d.addBoth(lambda _: finish())

    def finish() -> None:
        if ticker.running:
            ticker.stop()
        engine.stop()
        queue.put(("result", index, recorder.to_dict()))
        reactor.stop()

    reactor.callLater(max(0.0, start_at - scenario.warmup - time.time()), begin)
    reactor.run()
