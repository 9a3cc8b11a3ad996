"""Bot units: thresholds, exact histogram merging, arrival schedules, and open-model latency on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from twinfer.bot import engine as engine_module
from twinfer.bot import schedule
from twinfer.bot.histogram import Latency
from twinfer.bot.recorder import Merged, Recorder
from twinfer.bot.scenario import Scenario, load_scenario, parse_duration
from twinfer.bot.thresholds import parse_threshold
from twinfer.errors import ConfigError


@pytest.mark.parametrize("text, metric, op, value", [
    ("p99<5ms", "p99", "<", 5.0), ("p50 <= 800us", "p50", "<=", 0.8), ("p99.9<1s", "p99.9", "<", 1000.0),
    ("mean<2ms", "mean", "<", 2.0), ("error_rate<0.1%", "error_rate", "<", 0.001), ("error_rate<0.02", "error_rate",
                                                                                      "<", 0.02),
    ("rps>1000", "rps", ">", 1000.0),
])
def test_thresholds_parse(text, metric, op, value):
    t = parse_threshold(text)
    assert (t.metric, t.op) == (metric, op) and t.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["p99", "p99<5kg", "latency<5ms", "rps>10ms", "p120<1ms", "error_rate<5ms",
                                  "p99<5", "mean<2"])  # #18 item 4: a latency without a unit is refused
def test_bad_thresholds_are_config_errors(text):
    with pytest.raises(ConfigError, match="threshold"):
        parse_threshold(text)


def test_threshold_checks_a_summary():
    summary = {"latency_ms": {"p99": 4.0}, "error_rate": 0.002, "rps": 900.0}
    assert parse_threshold("p99<5ms").check(summary) == (True, 4.0)
    assert parse_threshold("error_rate<0.1%").check(summary)[0] is False
    assert parse_threshold("rps>1000").check(summary) == (False, 900.0)


def test_histograms_merge_exactly_through_their_encoding():
    rng = np.random.default_rng(0)
    values = rng.exponential(0.002, 20_000)
    whole, a, b = Latency(), Latency(), Latency()
    for i, v in enumerate(values):
        whole.record_s(v)
        (a if i % 3 else b).record_s(v)
    merged = Latency()
    merged.add_encoded(a.encode())
    merged.add_encoded(b.encode())
    assert merged.count == whole.count == 20_000
    assert merged.summary_ms() == whole.summary_ms()


def test_recorders_merge_counts_and_error_timing():
    r1, r2 = Recorder(100.0), Recorder(100.0)
    r1.success(100.5, 0.001)
    r1.error(101.2, "timeout")
    r1.success(101.7, 0.001)
    r2.error(102.1, "OVERLOADED")
    merged = Merged()
    for r in (r1, r2):
        merged.add(r.to_dict())
    assert merged.total.count == 2 and sum(merged.failed.values()) == 2
    assert merged.errors == {"timeout": 1, "OVERLOADED": 1}
    assert merged.first_error_at == pytest.approx(1.2) and merged.last_error_at == pytest.approx(2.1)
    assert merged.unrecovered  # r2 never succeeded after its error


def test_constant_schedule_and_worker_shares_interleave():
    single = list(schedule.arrivals(schedule.constant(100), 2.0))
    assert len(single) == 199 and single[0] == pytest.approx(0.01)
    two = sorted([*schedule.arrivals(schedule.constant(100), 2.0, 0.5, 0.5),
                  *schedule.arrivals(schedule.constant(100), 2.0, 0.5, 1.0)])
    np.testing.assert_allclose(two, single, atol=1e-9)


def test_staged_ramp_and_spike_and_stress_rates():
    ramp = schedule.staged([(10, 100), (10, 100)], start_rate=0)
    assert ramp(0) == 0 and ramp(5) == pytest.approx(50) and ramp(15) == 100
    assert 450 < len(list(schedule.arrivals(ramp, 10))) <= 510  # about the integral, 500
    spike = schedule.spike(10, 10, at=2, length=1)
    assert (spike(1.9), spike(2.0), spike(3.0)) == (10, 100, 10)
    stress = schedule.steps(100, 2, step=3, max_rate=500)
    assert (stress(0), stress(3.1), stress(6.5), stress(100)) == (100, 200, 400, 500)


class SlowConnection:
    """Answers each request 10 ms after it starts, on the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def infer(self) -> Deferred:
        d: Deferred = Deferred()
        self.clock.callLater(0.010, d.callback, None)
        return d

    def close(self) -> None:
        pass


def test_open_model_latency_counts_from_the_intended_time(monkeypatch):
    """200 requests/s into one connection that serves 100/s: latency must grow with the queue (no coordinated
    omission), and every scheduled request is still sent."""
    clock = Clock()
    monkeypatch.setattr(engine_module, "MAX_OPEN_CONNECTIONS", 1)
    scenario = Scenario(target="127.0.0.1:1", protocol="tcp", rate=200, duration=1.0, timeout=60)
    recorder = Recorder(clock.seconds())
    eng = engine_module.Engine(clock, scenario, recorder, seed=0)
    monkeypatch.setattr(eng, "connect", lambda: Deferred.fromCoroutine(_ready(SlowConnection(clock))))
    done = []
    eng.open_load(schedule.arrivals(schedule.constant(200), 1.0), clock.seconds()).addCallback(done.append)
    for _ in range(600):
        clock.advance(0.005)
    assert done == [None]
    assert recorder.scheduled == recorder.sent == 199
    summary = recorder.total.summary_ms()
    assert summary["min"] == pytest.approx(10, abs=0.1)
    assert summary["max"] > 900  # the last request waited about a second behind the others
    closed_equivalent = 10.0
    assert summary["p99"] > 50 * closed_equivalent


async def _ready(value):
    return value


def test_scenario_file_and_overrides(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("target: 10.0.0.1:9000\nprotocol: http\nrate: 50\nduration: 2m\nthresholds: ['p99<5ms']\n"
                 "json: out.json\n")
    s = load_scenario(f, {"users": 4, "rate": None, "protocol": None, "thresholds": []})
    assert (s.protocol, s.users, s.rate, s.duration, s.thresholds) == ("http", 4, 0, 120.0, ["p99<5ms"])
    assert not s.open_model and str(s.json_path) == "out.json"
    with pytest.raises(ConfigError, match="userz: unknown key"):
        load_scenario(None, {"userz": 3})
    assert parse_duration("250ms") == 0.25 and parse_duration(3) == 3.0
