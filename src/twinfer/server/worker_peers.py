"""Under `--workers N`: the worker a statistics call or a scrape lands on answers for the whole group.

SO_REUSEPORT hands each connection to any one of the N workers, so a `/v2/models/stats` call, a gRPC
ModelStatistics call or a Prometheus scrape reached one worker and reported its counters alone: counts jumped up
and down between calls (perf_analyzer read 125,917 inferences for 232,940 requests sent to two workers, and once
quit on counters going backwards), and Prometheus took every change of worker for a counter reset.

So each worker listens on a UNIX socket in the supervisor's run directory (made by mkdtemp, mode 0700: only the
server's own user can connect; nothing of this is on a network port) and answers one line, `stats` or `metrics`,
with its own counters as JSON. The worker that got the call asks its siblings at that moment, and

- sums the model statistics: Triton's format has no notion of processes, and a sum of counters read live from
  processes whose counters only grow only grows;
- labels every metric sample with `worker`, the usual way to export several processes behind one target:
  counters stay per process (a restarted worker is a reset of its own series only, which `rate()` handles), and
  gauges such as `twinfer_model_ready` or the process memory keep their meaning. `sum without (worker)` in PromQL
  gives the server's totals.

A sibling that does not answer within `timeout_s` (it is being restarted, or hung until the supervisor kills it)
is counted with its last answer; that is logged once per outage.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

log = Logger()
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # one worker's metrics with thousands of streams are a few MB


def socket_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"worker-{index}.peer.sock"


class PeerUnavailable(Exception):
    """A sibling worker did not answer (in time, or with valid JSON)."""


class _AnswerProtocol(LineOnlyReceiver):
    """Server side: one request line, one JSON answer, then the connection closes."""

    MAX_LENGTH = 64
    delimiter = b"\n"

    def __init__(self, answers: dict[str, Callable[[], Any]]) -> None:
        self._answers = answers

    def lineReceived(self, line: bytes) -> None:
        kind = line.strip().decode("ascii", "replace")
        answer = self._answers.get(kind)
        if answer is None:
            self.transport.loseConnection()
            return
        # numpy scalars: a python model's own metrics (pb_utils.MetricFamily) may be set from numpy values
        self.transport.write(orjson.dumps(answer(), option=orjson.OPT_SERIALIZE_NUMPY))
        self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.abortConnection()


class _AskProtocol(Protocol):
    """Client side: send the request line, collect the answer until the sibling closes."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._chunks: list[bytes] = []
        self._size = 0
        self.answered: Deferred[Any] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._kind.encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_ANSWER_BYTES:
            self._chunks.clear()
            self.transport.abortConnection()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.answered.called:
            return
        if self._size > MAX_ANSWER_BYTES:
            self.answered.errback(PeerUnavailable(f"answer over {MAX_ANSWER_BYTES} bytes"))
            return
        try:
            self.answered.callback(orjson.loads(b"".join(self._chunks)))
        except orjson.JSONDecodeError as exc:
            self.answered.errback(PeerUnavailable(f"answer is not JSON: {exc}"))


class WorkerPeers:
    """This worker's link to its siblings: answers their questions, and asks them on behalf of a caller."""

    def __init__(self, reactor: Any, run_dir: Path, index: int, count: int,
                 answers: dict[str, Callable[[], Any]], timeout_s: float = 1.0) -> None:
        self._reactor = reactor
        self._run_dir = Path(run_dir)
        self.index = index
        self.count = count
        self._answers = answers
        self._timeout_s = timeout_s
        self._last: dict[tuple[str, int], Any] = {}  # (kind, sibling) -> its last answer
        self._missing: set[int] = set()
        self._port: Any = None

    def siblings(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    def listen(self) -> None:
        path = socket_path(self._run_dir, self.index)
        try:
            path.unlink()  # left by this index's previous process (killed, restarted)
        except FileNotFoundError:
            pass
        factory = Factory.forProtocol(lambda: _AnswerProtocol(self._answers))
        self._port = self._reactor.listenUNIX(os.fspath(path), factory, mode=0o600)

    def stop_listening(self) -> Deferred[None] | None:
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    def ask_all(self, kind: str) -> Deferred[list[tuple[int, Any]]]:
        """[(sibling index, its answer)] for every sibling that answered now or has answered before."""
        asks = [self._ask(kind, i) for i in self.siblings()]
        return gatherResults(asks).addCallback(lambda answers: [a for a in answers if a[1] is not None])

    def _ask(self, kind: str, index: int) -> Deferred[tuple[int, Any]]:
        endpoint = UNIXClientEndpoint(self._reactor, os.fspath(socket_path(self._run_dir, index)),
                                      timeout=self._timeout_s)
        protocol = _AskProtocol(kind)
        connecting = connectProtocol(endpoint, protocol)
        answered: Deferred[Any] = connecting.addCallback(lambda _: protocol.answered)
        answered.addTimeout(self._timeout_s, self._reactor, onTimeoutCancel=lambda *_: self._timed_out(protocol))

        def got(answer: Any) -> tuple[int, Any]:
            self._last[kind, index] = answer
            if index in self._missing:
                self._missing.discard(index)
                log.info("worker {i} answers again: its statistics and metrics are live", i=index)
            return index, answer

        def failed(failure: Any) -> tuple[int, Any]:
            if index not in self._missing:
                self._missing.add(index)
                log.warn("worker {i} did not answer for statistics/metrics ({why}); counting its last answer until "
                         "it does", i=index, why=failure.getErrorMessage() or failure.type.__name__)
            return index, self._last.get((kind, index))

        return answered.addCallbacks(got, failed)

    @staticmethod
    def _timed_out(protocol: _AskProtocol) -> None:
        if protocol.transport is not None:
            protocol.transport.abortConnection()
        raise PeerUnavailable("no answer in time")


def metric_families_json(families: Any) -> list[list[Any]]:
    """A registry's collected families as plain JSON (NaN and infinities as strings, which JSON has not)."""
    return [[f.name, f.documentation, f.type, f.unit,
             [[s.name, s.labels, s.value if math.isfinite(s.value) else repr(float(s.value))] for s in f.samples]]
            for f in families]
