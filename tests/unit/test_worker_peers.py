"""Workers answering for each other (twinfer.server.worker_peers): the one-line protocol both ways, a sibling that
fails or times out counted with its last answer, statistics summed and metrics labelled by worker."""

from __future__ import annotations

import json
import math

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from twinfer.inference.statistics import ModelStatistics
from twinfer.kserve.statistics import StatisticsReader
from twinfer.metrics import GroupExposition
from twinfer.server.worker_peers import MAX_ANSWER_BYTES, WorkerPeers, metric_families_json, socket_path


def peers(tmp_path, index=0, count=3, answers=None) -> tuple[WorkerPeers, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    return WorkerPeers(reactor, tmp_path, index, count, answers or {}, timeout_s=1.0), reactor


def connect(reactor: MemoryReactorClock, position: int) -> tuple[object, StringTransport]:
    """Complete the `position`-th UNIX connection the peers asked for; returns its protocol and transport."""
    _, factory, *_ = reactor.unixClients[position]
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def answer(protocol, transport: StringTransport, payload) -> None:
    protocol.dataReceived(orjson.dumps(payload))
    protocol.connectionLost(Failure(ConnectionRefusedError()))  # any reason: the close ends the answer


def test_a_worker_answers_one_known_line_with_json_and_closes(tmp_path):
    link, reactor = peers(tmp_path, answers={"stats": lambda: {"versions": [["tiny", 1, {"x": 1}]]}})
    link.listen()
    [(path, factory, _, mode)] = [(p[0], p[1], p[2], p[3]) for p in reactor.unixServers]
    assert path == str(socket_path(tmp_path, 0)) and mode == 0o600
    for line, expected in ((b"stats\n", {"versions": [["tiny", 1, {"x": 1}]]}), (b"nonsense\n", None)):
        protocol, transport = factory.buildProtocol(None), StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(line)
        assert transport.disconnecting
        assert (json.loads(transport.value()) if transport.value() else None) == expected
    flood = factory.buildProtocol(None)
    flood_transport = StringTransport()
    flood.makeConnection(flood_transport)
    flood.dataReceived(b"x" * 1000)  # no newline, past the line limit: dropped, nothing answered
    assert flood_transport.value() == b"" and flood_transport.disconnecting


def test_siblings_are_asked_and_one_that_fails_counts_with_its_last_answer(tmp_path):
    link, reactor = peers(tmp_path, index=1, count=3)
    results = []
    link.ask_all("stats").addCallback(results.append)
    assert [c[0] for c in reactor.unixClients] == [str(socket_path(tmp_path, 0)), str(socket_path(tmp_path, 2))]
    first, t0 = connect(reactor, 0)
    assert t0.value() == b"stats\n"
    answer(first, t0, {"versions": ["zero"]})
    _, factory2, *_ = reactor.unixClients[1]
    factory2.clientConnectionFailed(None, Failure(ConnectionRefusedError()))  # worker 2 not listening yet
    assert results == [[(0, {"versions": ["zero"]})]]  # nothing known of worker 2 yet: left out

    results.clear()
    link.ask_all("stats").addCallback(results.append)
    connect(reactor, 2)  # worker 0 accepts and then says nothing
    again, t2 = connect(reactor, 3)
    answer(again, t2, {"versions": ["two"]})
    assert results == []
    reactor.advance(1.0)  # worker 0's timeout: its last answer stands in, and its connection is dropped
    assert results == [[(0, {"versions": ["zero"]}), (2, {"versions": ["two"]})]]


def test_an_oversized_or_broken_answer_is_not_taken(tmp_path):
    link, reactor = peers(tmp_path, count=2)
    results = []
    link.ask_all("metrics").addCallback(results.append)
    protocol, transport = connect(reactor, 0)
    protocol.dataReceived(b"x" * (MAX_ANSWER_BYTES + 1))
    assert transport.disconnecting or transport.disconnected
    protocol.connectionLost(Failure(ConnectionRefusedError()))
    link.ask_all("metrics").addCallback(results.append)
    broken, t = connect(reactor, 1)
    broken.dataReceived(b"{not json")
    broken.connectionLost(Failure(ConnectionRefusedError()))
    assert results == [[], []]


def test_statistics_round_trip_and_sum():
    mine = ModelStatistics()
    mine.success.add(1_000, 2)
    mine.record_batch(rows=2, compute_ns=500, requests=2, now_ms=100)
    theirs = ModelStatistics()
    theirs.success.add(3_000, 3)
    theirs.failure.add(10, 1)
    theirs.record_batch(rows=1, compute_ns=90, requests=1, now_ms=200)
    theirs.record_batch(rows=2, compute_ns=700, requests=2, now_ms=250)
    total = mine.copy()
    total.add(json.loads(json.dumps(theirs.to_json())))  # through JSON, as between workers
    assert (total.success.count, total.success.ns, total.failure.count) == (5, 4_000, 1)
    assert (total.inference_count, total.execution_count, total.last_inference_ms) == (5, 3, 250)
    assert {rows: (b.count, b.compute_ns) for rows, b in total.batches.items()} == {2: (2, 1_200), 1: (1, 90)}
    assert mine.success.count == 2  # the copy did not touch the live counters


class _Version:
    def __init__(self, name, version, stats):
        self.name, self.version, self.stats = name, version, stats


def test_the_reader_sums_only_the_versions_this_worker_serves():
    stats = ModelStatistics()
    stats.success.add(100, 4)
    other = ModelStatistics()
    other.success.add(50, 6)
    answers = [(1, {"versions": [["tiny", 1, other.to_json()], ["tiny", 2, other.to_json()]]}), (2, {"versions": []})]
    [summed] = StatisticsReader._summed(answers, [_Version("tiny", 1, stats)])
    assert (summed.name, summed.version) == ("tiny", "1")
    assert summed.inference_stats.success.count == 10 and summed.inference_stats.success.ns == 150


class _Registry:
    def __init__(self, families):
        self._families = families

    def collect(self):
        return self._families


def test_metrics_from_every_worker_carry_a_worker_label():
    def families(success: float, sessions: float):
        counter = CounterMetricFamily("twinfer_inference_request_success", "help", labels=["model"])
        counter.add_metric(["tiny"], success)
        gauge = GaugeMetricFamily("twinfer_sessions", "open sessions", value=sessions)
        odd = GaugeMetricFamily("python_model_gauge", "a model's own", value=math.nan)
        histogram = HistogramMetricFamily("twinfer_stream_latency_seconds", "latency",
                                          buckets=[("0.01", 1), ("+Inf", 2)], sum_value=0.5)
        return [counter, gauge, odd, histogram]

    class _Peers:
        index = 1

    exposition = GroupExposition(_Registry(families(7, 2)), _Peers())
    theirs = json.loads(json.dumps(metric_families_json(families(5, 3))))
    body, content_type = exposition._render([(0, theirs)], metric_families_json(families(7, 2)))
    assert content_type.startswith(b"text/plain")
    parsed = {f.name: f for f in text_string_to_metric_families(body.decode())}
    success = {s.labels["worker"]: s.value for s in parsed["twinfer_inference_request_success"].samples}
    assert success == {"0": 5.0, "1": 7.0}
    assert {s.labels["worker"]: s.value for s in parsed["twinfer_sessions"].samples} == {"0": 3.0, "1": 2.0}
    assert all(math.isnan(s.value) for s in parsed["python_model_gauge"].samples)
    buckets = [s for s in parsed["twinfer_stream_latency_seconds"].samples if s.name.endswith("_bucket")]
    assert {(s.labels["worker"], s.labels["le"]) for s in buckets} == {(w, le) for w in "01" for le in ("0.01", "+Inf")}
