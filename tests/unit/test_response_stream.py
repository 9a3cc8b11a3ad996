"""ResponseStream: a decoupled model's responses to one request, in order, bounded, ended by a final item, an error
or the client going away. Real threads where a sender blocks; the consumer side runs where it is called (no
reactor: `call_from_thread=None` delivers at once)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from twinfer.errors import InferenceFailed, Unavailable
from twinfer.inference.response_stream import ResponseStream, ResponseStreamClosed, StreamItem


def taken(stream: ResponseStream) -> list[StreamItem]:
    out: list[StreamItem] = []
    while True:
        d = stream.next()
        got: list[StreamItem] = []
        d.addCallback(got.append)
        if not got:
            return out
        out.append(got[0])


def item(value: int, final: bool = False) -> StreamItem:
    return StreamItem(outputs={"y": np.array([value])}, final=final)


def test_items_come_in_order_and_nothing_follows_the_final_one():
    stream = ResponseStream()
    for value in range(3):
        stream.put(item(value))
    stream.put(StreamItem(final=True))
    got = taken(stream)
    assert [i.outputs["y"][0] for i in got[:3]] == [0, 1, 2] and got[3].final and got[3].outputs is None
    with pytest.raises(ResponseStreamClosed, match="final response was already sent"):
        stream.put(item(4))
    stream.fail(InferenceFailed("late"))  # after the end: nothing
    assert taken(stream) == []


def test_a_waiting_consumer_gets_the_next_item_when_it_is_put():
    stream = ResponseStream()
    got: list[StreamItem] = []
    stream.next().addCallback(got.append)
    assert got == []
    stream.put(item(7, final=True))
    assert got[0].outputs["y"][0] == 7 and got[0].final


def test_fail_ends_the_stream_with_the_error():
    stream = ResponseStream()
    stream.put(item(1))
    stream.fail(InferenceFailed("execute raised"))
    first, last = taken(stream)
    assert first.outputs["y"][0] == 1 and last.final and last.error.message == "execute raised"
    with pytest.raises(ResponseStreamClosed):
        stream.put(item(2))


def test_a_full_stream_blocks_the_sender_until_the_consumer_takes_one():
    stream = ResponseStream(max_pending=2, send_wait_s=20)
    stream.put(item(0))
    stream.put(item(1))
    sent = threading.Event()

    def send_third():
        stream.put(item(2))
        sent.set()

    thread = threading.Thread(target=send_third)
    thread.start()
    assert not sent.wait(0.2)  # blocked: two responses wait for the client
    got: list[StreamItem] = []
    stream.next().addCallback(got.append)
    assert sent.wait(10)
    thread.join(10)
    assert got[0].outputs["y"][0] == 0 and [i.outputs["y"][0] for i in taken(stream)] == [1, 2]


def test_a_client_that_never_reads_ends_the_stream_after_the_wait():
    stream = ResponseStream(max_pending=2, send_wait_s=0.05)
    stream.put(item(0))
    stream.put(item(1))
    with pytest.raises(ResponseStreamClosed, match="not reading"):
        stream.put(item(2))
    (only,) = taken(stream)  # what waited is dropped; the client learns why
    assert only.final and isinstance(only.error, Unavailable) and "read none of 2 responses" in only.error.message


def test_cancel_wakes_a_blocked_sender_and_fails_later_sends():
    stream = ResponseStream(max_pending=1, send_wait_s=20)
    stream.put(item(0))
    raised: list[BaseException] = []

    def send():
        try:
            stream.put(item(1))
        except ResponseStreamClosed as exc:
            raised.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    thread.join(0.1)
    assert thread.is_alive()
    stream.cancel()
    thread.join(10)
    assert not thread.is_alive() and "client has gone" in str(raised[0])
    assert stream.cancelled and taken(stream) == []
    with pytest.raises(ResponseStreamClosed, match="client has gone"):
        stream.put(item(2))


def test_deliveries_from_other_threads_go_through_call_from_thread():
    scheduled: list = []
    stream = ResponseStream(call_from_thread=scheduled.append)
    got: list[StreamItem] = []
    stream.next().addCallback(got.append)
    thread = threading.Thread(target=stream.put, args=(item(3, final=True),))
    thread.start()
    thread.join(10)
    assert got == [] and len(scheduled) == 1  # nothing fired on the sender's thread
    scheduled[0]()
    assert got[0].outputs["y"][0] == 3


def test_the_streams_of_the_process_share_one_byte_cap(monkeypatch):
    from twinfer.inference import response_stream

    monkeypatch.setattr(response_stream.QUEUED, "cap", 1000)
    before = response_stream.QUEUED.used
    big = StreamItem(outputs={"y": np.zeros(200, np.float32)})  # 800 bytes
    a, b = ResponseStream(send_wait_s=0.05), ResponseStream(send_wait_s=0.05)
    a.put(big)
    b.put(big)  # over the cap, but b had nothing queued: a stream never starves
    with pytest.raises(ResponseStreamClosed, match="response streams are full"):
        a.put(big)
    *_, last = taken(a)
    assert last.final and isinstance(last.error, Unavailable) and "have not read" in last.error.message
    taken(b)
    assert response_stream.QUEUED.used == before  # everything taken gave its bytes back
    c = ResponseStream()
    c.put(big)
    c.cancel()  # ... and so does what a gone client left
    assert response_stream.QUEUED.used == before
