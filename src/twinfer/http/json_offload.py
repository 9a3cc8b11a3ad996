"""Large KServe JSON infer bodies parsed in a child process, so they do not stall the reactor (#14 finding 6).

Measured on the 2-core dev machine: parsing an 8.7 MB JSON body (2 M floats) costs 66 ms (orjson.loads 45 ms, the
list -> ndarray conversion 17 ms), a 49 MB one 374 ms, all of it holding the GIL. A thread does not help: orjson and
numpy's list conversion are single C calls that never release the GIL, so the reactor still stopped for 48 ms per
8 MB body with the parse in a thread. A child process parses with its own interpreter.

Getting the body there must not cost the reactor either: joining the 7 MB of received chunks took 9 ms and
pickling the body for a ProcessPoolExecutor 11 ms (fresh memory, page faults). So the chunks go, as they arrived,
down a socket pair in one gathering sendmsg from a feeder thread (GIL released), the child parses them, and only the
parsed request comes back, its arrays out of band and read into place with the GIL released (an ordinary unpickle
held it ~1 ms per 1.4 MB). The child runs at SCHED_IDLE: large JSON is parsed with the CPU nothing else wants.

Bodies with less than `threshold_bytes` of JSON (a few ms of parsing at most) are parsed inline: the round trip
costs more.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import socket
import threading
from typing import Any

import numpy as np

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twinfer.errors import Overloaded, Unavailable
from twinfer.http.infer_codec import ParsedInfer, parse_infer
from twinfer.inference.limits import DEFAULT_MAX_ELEMENTS, ElementBudget

log = Logger()

OFFLOAD_JSON_BYTES = 512 * 1024  # ~3.5 ms of parsing on the reactor; above it, the child parses
CHILD_NICENESS = 19
PARSE_TIMEOUT_S = 30.0  # a large JSON body not parsed by then (a saturated machine) is refused, 503


def json_part_size(size: int, header_length: bytes | None) -> int:
    """Bytes of JSON in a `size`-byte body (all of it, or the binary extension's JSON header)."""
    if header_length is not None and header_length.isdigit():
        return min(int(header_length), size)
    return size


class InlineDecoder:
    """Parses on the calling thread (tests, and servers that want no child process)."""

    def parse(self, model: str, version: str | None, chunks: list[bytes], header_length: bytes | None,
              max_elements: int = DEFAULT_MAX_ELEMENTS) -> ParsedInfer:
        return parse_infer(model, version, chunks[0] if len(chunks) == 1 else b"".join(chunks), header_length,
                           ElementBudget(max_elements))

    def stop(self) -> None:
        pass


_INLINE = InlineDecoder()


def _send_answer(conn: Any, raw: socket.socket, answer: tuple[bool, Any]) -> None:
    """The answer pickled with its arrays out of band (protocol 5): the pickle, the buffer sizes, then the buffers'
    bytes as they are, which the parent reads straight into arrays of its own (see `_recv_answer`)."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(answer, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send_bytes(header)
    conn.send([v.nbytes for v in views])
    for view in views:
        raw.sendall(view)


def _send_chunks(raw: socket.socket, chunks: list[bytes]) -> None:
    """All chunks in as few syscalls as the kernel allows (sendmsg gathers them; the GIL is released throughout),
    instead of one send and one GIL hand-over per 64 KB chunk, each a chance for the reactor to wait."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        sent = raw.sendmsg(views[:1024])  # IOV_MAX
        while sent:
            if sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


def _recv_exactly(raw: socket.socket, buffer: Any) -> None:
    view, got, size = memoryview(buffer).cast("B"), 0, memoryview(buffer).nbytes
    while got < size:
        n = raw.recv_into(view[got:])
        if n == 0:
            raise EOFError("decoder pipe closed mid-message")
        got += n


def _recv_answer(conn: Any, raw: socket.socket) -> tuple[bool, Any]:
    """Reading the arrays with recv_into on fresh np.empty buffers: the copy and its page faults happen in the
    kernel with the GIL released (a BytesIO and an unpickle copy held it ~1 ms per 1.4 MB, time the reactor lost)."""
    header = conn.recv_bytes()
    sizes = conn.recv()
    buffers = []
    for size in sizes:
        buffer = np.empty(size, np.uint8)
        _recv_exactly(raw, buffer)
        buffers.append(buffer)
    return pickle.loads(header, buffers=buffers)


def _lower_priority() -> None:
    """SCHED_IDLE where there is one (Linux): any runnable normal task, the reactor first, preempts the parser at
    once; a nice value alone still let it hold a core for a scheduler slice (~1 ms) the reactor then waited for
    (SCHED_BATCH at nice 19: bystander p99 0.5 -> 2.1 ms under 7 MB bodies). A saturated machine may then starve the
    parser: PARSE_TIMEOUT_S bounds what that costs a request."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(CHILD_NICENESS)
        except OSError:
            pass


def _child_main(conn: Any) -> None:
    """The child: (model, version, header_length, body size), then the body's bytes; answers (True, parsed) or
    (False, exception)."""
    _lower_priority()
    raw = socket.socket(fileno=os.dup(conn.fileno()))
    while True:
        try:
            model, version, header_length, size, max_elements = conn.recv()
            body = bytearray(size)
            _recv_exactly(raw, body)
        except (EOFError, OSError):
            return
        try:
            answer: tuple[bool, Any] = (True, parse_infer(model, version, body, header_length,
                                                          ElementBudget(max_elements)))
        except Exception as exc:  # noqa: BLE001 - typed errors travel back to the request
            answer = (False, exc)
        del body
        _send_answer(conn, raw, answer)


class ProcessDecoder:
    """One child process (started on first use, with `spawn`: the server has threads, and a forked copy of them
    is unsafe) and one thread that feeds it, one body at a time, in arrival order."""

    def __init__(self, reactor: Any, threshold_bytes: int = OFFLOAD_JSON_BYTES,
                 timeout_s: float = PARSE_TIMEOUT_S) -> None:
        self._reactor = reactor
        self.threshold_bytes = threshold_bytes
        self.timeout_s = timeout_s
        self._jobs: queue.SimpleQueue[tuple[Deferred[ParsedInfer], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._child: Any = None
        self._conn: Any = None
        self._raw: Any = None

    def parse(self, model: str, version: str | None, chunks: list[bytes], header_length: bytes | None,
              max_elements: int = DEFAULT_MAX_ELEMENTS) -> ParsedInfer | Deferred[ParsedInfer]:
        size = sum(len(c) for c in chunks)
        if json_part_size(size, header_length) < self.threshold_bytes:
            return _INLINE.parse(model, version, chunks, header_length, max_elements)
        if self._thread is None:
            self._thread = threading.Thread(target=self._feed, name="twinfer-json-decoder", daemon=True)
            self._thread.start()
        d: Deferred[ParsedInfer] = Deferred()
        expiry = self._reactor.callLater(self.timeout_s, self._expire, d)
        self._jobs.put((d, (model, version, header_length, chunks, max_elements)))
        return d.addBoth(self._cancel, expiry)

    @staticmethod
    def _cancel(result: Any, expiry: Any) -> Any:
        if expiry.active():
            expiry.cancel()
        return result

    def _expire(self, d: Deferred[ParsedInfer]) -> None:
        if not d.called:  # the feeder's late answer for it is dropped
            d.errback(Overloaded(f"a large JSON body waited more than {self.timeout_s:g} s to be parsed (the server "
                                 "is saturated); retry, or send tensors with the binary extension"))

    def _deliver(self, d: Deferred[ParsedInfer], ok: bool, value: Any) -> None:
        if not d.called:
            (d.callback if ok else d.errback)(value)

    def _feed(self) -> None:
        while (job := self._jobs.get()) is not None:
            d, (model, version, header_length, chunks, max_elements) = job
            try:
                ok, value = self._round_trip(model, version, header_length, chunks, max_elements)
            except (EOFError, OSError) as exc:
                self._reactor.callFromThread(log.warn, "JSON decoder process lost ({error}); restarting it",
                                             error=repr(exc))
                self._discard_child()
                ok, value = False, Unavailable("the JSON decoder process died; retry")
            except BaseException:  # noqa: BLE001 - handed to the request, as deferToThread does
                ok, value = False, Failure()
            del chunks
            self._reactor.callFromThread(self._deliver, d, ok, value)

    def _round_trip(self, model: str, version: str | None, header_length: bytes | None,
                    chunks: list[bytes], max_elements: int) -> tuple[bool, Any]:
        if self._child is None or not self._child.is_alive():
            self._start_child()
        self._conn.send((model, version, header_length, sum(len(c) for c in chunks), max_elements))
        _send_chunks(self._raw, chunks)
        return _recv_answer(self._conn, self._raw)

    def _start_child(self) -> None:
        self._discard_child()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._child = context.Process(target=_child_main, args=(child,), name="twinfer-json-decoder", daemon=True)
        self._child.start()
        child.close()
        self._conn = parent
        self._raw = socket.socket(fileno=os.dup(parent.fileno()))  # the same stream, for the answers' arrays

    def _discard_child(self) -> None:
        if self._child is not None:  # first: a feeder blocked reading its answer then sees EOF
            self._child.kill()
            self._child.join(5)
        if self._conn is not None:
            self._conn.close()
            self._raw.close()
        self._child = self._conn = self._raw = None

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(5)
            self._thread = None
        self._discard_child()
