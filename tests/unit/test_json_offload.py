"""The JSON decoder process: same answer as parsing inline, typed errors come back typed, a dead child is replaced,
and small bodies never leave the reactor thread."""

from __future__ import annotations

import json
import queue

import numpy as np
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twinfer.errors import InvalidInput, Overloaded
from twinfer.http.infer_codec import ParsedInfer, parse_infer
from twinfer.http.json_offload import ProcessDecoder


class ThreadReactor:
    """callFromThread onto a queue the test drains, callLater on a Clock the test advances: the decoder's uses of
    the reactor."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()
        self.clock = Clock()

    def callLater(self, delay, f, *args, **kwargs):  # noqa: N802 - Twisted's name
        return self.clock.callLater(delay, f, *args, **kwargs)

    def callFromThread(self, f, *args, **kwargs) -> None:  # noqa: N802 - Twisted's name
        self.calls.put((f, args, kwargs))


def settle(reactor: ThreadReactor, d: Deferred, timeout: float = 60.0):
    results: list = []
    d.addBoth(results.append)
    while not results:
        f, args, kwargs = reactor.calls.get(timeout=timeout)
        f(*args, **kwargs)
    return results[0]


def body(n: int) -> bytes:
    data = np.random.default_rng(4).standard_normal(n).astype(np.float32)
    return json.dumps({"id": "r", "inputs": [{"name": "X", "shape": [1, n], "datatype": "FP32",
                                              "data": data.tolist()}]}).encode()


@pytest.fixture
def decoder():
    reactor = ThreadReactor()
    dec = ProcessDecoder(reactor, threshold_bytes=64 * 1024)
    yield reactor, dec
    dec.stop()


def chunks_of(data: bytes, size: int = 65536) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_large_bodies_parse_in_the_child_like_inline_and_small_ones_inline(decoder):
    reactor, dec = decoder
    big = body(50_000)
    d = dec.parse("m", "1", chunks_of(big), None)
    assert isinstance(d, Deferred)
    parsed = settle(reactor, d)
    expected = parse_infer("m", "1", big, None)
    assert isinstance(parsed, ParsedInfer) and parsed.request_id == "r" and parsed.request.version == "1"
    np.testing.assert_array_equal(parsed.request.inputs["X"], expected.request.inputs["X"])
    small = dec.parse("m", None, [body(10)], None)
    assert isinstance(small, ParsedInfer)  # no round trip for a few hundred bytes


def test_errors_come_back_typed_and_a_dead_child_is_replaced(decoder):
    reactor, dec = decoder
    bad = b'{"inputs": [' + b"1," * 100_000
    failure = settle(reactor, dec.parse("m", None, chunks_of(bad), None))
    assert isinstance(failure, Failure) and failure.check(InvalidInput) and "JSON" in failure.value.message
    dec._child.kill()
    dec._child.join(10)
    parsed = settle(reactor, dec.parse("m", None, chunks_of(body(50_000)), None))
    assert parsed.request.inputs["X"].shape == (1, 50_000)


def test_a_parse_the_child_cannot_finish_in_time_is_refused_and_its_late_answer_dropped(decoder):
    """The child runs SCHED_IDLE (the reactor must never wait for it): on a saturated machine it may not run at all,
    so a large body waits at most PARSE_TIMEOUT_S, then gets Overloaded (503) instead of hanging."""
    reactor, dec = decoder
    results: list = []
    dec.parse("m", None, chunks_of(body(40_000)), None).addBoth(results.append)
    reactor.clock.advance(dec.timeout_s)
    assert len(results) == 1 and isinstance(results[0], Failure) and results[0].check(Overloaded)
    f, args, kwargs = reactor.calls.get(timeout=60)  # the child's answer, late: delivered to nobody
    f(*args, **kwargs)
    assert len(results) == 1
    ok = settle(reactor, dec.parse("m", None, chunks_of(body(40_000)), None))  # the decoder still works
    assert isinstance(ok, ParsedInfer)
