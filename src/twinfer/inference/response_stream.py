"""The responses of one request to a decoupled model (Triton's `model_transaction_policy { decoupled: true }`).

A decoupled model answers a request with any number of responses, then a final flag, sent from any thread and
possibly after `execute` has returned (a TTS model streaming audio chunks, a tracker streaming readings, an LLM
streaming tokens). The facade makes one `ResponseStream` per such request before it is queued and hands it to the
transport at once, so the transport is reading while the model sends.

Bounded: at most `max_pending` responses wait for the transport, and all streams of the process together hold at
most `QUEUED_BYTES_CAP` bytes of outputs (a stream with nothing queued may always queue one, so none starves). Past
either, `put` blocks the sending thread (the model feels the client's pace, as with flow control) for up to
`send_wait_s`; then, or at once when the client is gone, it raises `ResponseStreamClosed` and the stream ends with
an error. A client that never reads therefore costs bounded memory and, at worst, a model thread for
`send_wait_s`.

Threads: `put`, `fail` and `cancelled` from any thread; `next` and `cancel` on the reactor thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from twisted.internet.defer import Deferred, succeed

from twinfer.errors import TwinferError, Unavailable

MAX_PENDING = 64      # responses of one request waiting for the transport
SEND_WAIT_S = 10.0    # how long a model's send waits for room before the stream ends with an error
QUEUED_BYTES_CAP = 256 * 1024 * 1024  # outputs waiting in every stream of the process together


class _QueuedBytes:
    """The process-wide count of output bytes waiting in response streams."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.lock = threading.Lock()
        self.freed = threading.Condition(self.lock)

    def release(self, size: int) -> None:
        if size:
            with self.lock:
                self.used -= size
                self.freed.notify_all()


QUEUED = _QueuedBytes(QUEUED_BYTES_CAP)


class ResponseStreamClosed(Exception):
    """The stream has ended (its final response was sent, it failed, or the client went away)."""


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One response: outputs, or an error for this response; `final` ends the stream. A final item may carry
    neither (Triton's `send(flags=FINAL)` with no response)."""

    outputs: dict[str, np.ndarray] | None = None
    error: TwinferError | None = None
    final: bool = False
    parameters: dict | None = None  # the response's parameters (InferenceResponse(parameters=...))


def _size(item: StreamItem) -> int:
    return sum(int(getattr(a, "nbytes", 0)) for a in item.outputs.values()) if item.outputs else 0


class ResponseStream:
    def __init__(self, call_from_thread: Callable[..., object] | None = None, max_pending: int = MAX_PENDING,
                 send_wait_s: float = SEND_WAIT_S) -> None:
        self._call_from_thread = call_from_thread
        self.max_pending = max_pending
        self.send_wait_s = send_wait_s
        self._lock = threading.Condition()
        self._items: deque[StreamItem] = deque()
        self._ended = False       # a final item is queued: nothing more may be put
        self._cancelled = False   # the consumer has gone: drop everything
        self._waiter: Deferred[StreamItem] | None = None

    # --- the model's side (any thread) -----------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the client has gone (Triton's `is_cancelled()`)."""
        return self._cancelled

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, item: StreamItem) -> None:
        """Queue one response for the transport, waiting while `max_pending` are already queued or the process's
        streams hold QUEUED_BYTES_CAP bytes."""
        size = _size(item)
        with self._lock:
            if self._ended:
                raise ResponseStreamClosed("the response stream is closed: its final response was already sent"
                                           if not self._cancelled else "the client has gone")
            if len(self._items) >= self.max_pending:
                if not self._lock.wait_for(lambda: len(self._items) < self.max_pending or self._ended,
                                           self.send_wait_s):
                    self._end_with(Unavailable(f"the client read none of {self.max_pending} responses in "
                                               f"{self.send_wait_s:g} s; the stream was ended"), force=True)
                    raise ResponseStreamClosed(f"the client is not reading responses ({self.max_pending} waiting "
                                               f"for {self.send_wait_s:g} s)")
                if self._ended:
                    raise self._ended_while_waiting()
            alone = not self._items
        if not self._reserve(size, alone):
            self.fail(Unavailable(f"the server holds {QUEUED.cap} bytes of responses its clients have not read; "
                                  "this stream was ended"))
            raise ResponseStreamClosed(f"no room for a {size}-byte response in {self.send_wait_s:g} s (the process's "
                                       "response streams are full)")
        with self._lock:
            if self._ended:
                QUEUED.release(size)
                raise self._ended_while_waiting()
            self._items.append(item)
            self._ended = item.final
        self._wake()

    def _ended_while_waiting(self) -> ResponseStreamClosed:
        return ResponseStreamClosed("the client has gone" if self._cancelled else
                                    "the response stream was ended while this response waited")

    def _reserve(self, size: int, alone: bool) -> bool:
        """Take `size` bytes of the process-wide cap, waiting up to send_wait_s; a stream with nothing queued
        always may (so no stream starves while others hold the cap)."""
        with QUEUED.lock:
            if not alone and not QUEUED.freed.wait_for(lambda: QUEUED.used + size <= QUEUED.cap or self._cancelled,
                                                       self.send_wait_s):
                return False
            QUEUED.used += size
            return True

    def fail(self, error: TwinferError) -> None:
        """End the stream with an error, unless it has already ended (never blocks)."""
        with self._lock:
            if self._ended:
                return
            self._end_with(error, force=False)
        self._wake()

    def _end_with(self, error: TwinferError, force: bool) -> None:
        """Under the lock: queue a final error item (past the cap when `force`: the consumer must learn why)."""
        if force:
            self._drop_all()  # the waiting responses are dropped: the error says the stream is cut short
        self._items.append(StreamItem(error=error, final=True))
        self._ended = True
        self._lock.notify_all()

    def _wake(self) -> None:
        if self._call_from_thread is None:
            self._deliver()
        else:
            self._call_from_thread(self._deliver)

    # --- the transport's side (reactor thread) -----------------------------------------------------------------

    def next(self) -> Deferred[StreamItem]:
        """The next response, in the order they were put; call again after each, until one is `final`."""
        item = self._take()
        if item is not None:
            return succeed(item)
        self._waiter = Deferred()
        return self._waiter

    def cancel(self) -> None:
        """The client has gone: queued responses are dropped, waiting and later sends raise."""
        with self._lock:
            self._cancelled = True
            self._ended = True
            self._drop_all()
            self._lock.notify_all()
        with QUEUED.lock:
            QUEUED.freed.notify_all()  # a send of this stream waiting for room gives up now
        self._waiter = None

    def _drop_all(self) -> None:
        """Under the lock: forget the queued items and give their bytes back."""
        freed = sum(_size(item) for item in self._items)
        self._items.clear()
        QUEUED.release(freed)

    def _take(self) -> StreamItem | None:
        with self._lock:
            if not self._items:
                return None
            item = self._items.popleft()
            self._lock.notify_all()
        QUEUED.release(_size(item))
        return item

    def _deliver(self) -> None:
        if self._waiter is None:
            return
        item = self._take()
        if item is not None:
            waiter, self._waiter = self._waiter, None
            waiter.callback(item)
