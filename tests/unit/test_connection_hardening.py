"""Issue #14 on the game protocol, on StringTransport and a fake clock: kicked connections really close, frame
bodies have a deadline, token expiry ends a session, and a peer that does not read is not read either."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tests.unit.test_connection import SECRET, Harness, infer_message, replies, send
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.security.tokens import MAX_TOKEN_CHARS, TokenAuthority
from twinfer.server.connection import ConnectionLimits

E = game_pb2.ErrorCode


class UnreadPeerTransport(StringTransport):
    """A TCP transport whose peer never reads: `loseConnection` can only ever start closing (the goodbye never
    flushes), `abortConnection` closes at once, as Twisted's TCP transport does, by calling connectionLost."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.lost = False

    def abortConnection(self) -> None:
        super().abortConnection()
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionError("aborted")))


class ClosedPollTransport(UnreadPeerTransport):
    """A transport whose file descriptor the event loop already dropped: every write raises, as uvloop's does."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("UVPoll closed")


def connect(harness: Harness, transport: StringTransport):
    proto = harness.factory.buildProtocol(None)
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto


def ping(request_id: int) -> game_pb2.ClientMessage:
    return game_pb2.ClientMessage(request_id=request_id, ping=game_pb2.PingRequest())


def login(request_id: int, token: str) -> game_pb2.ClientMessage:
    msg = game_pb2.ClientMessage(request_id=request_id)
    msg.login.token = token
    return msg


# --- Finding 2: kicked sessions whose writes are paused ------------------------------------------------------------

def test_a_kicked_connection_whose_writes_are_paused_is_aborted_after_the_grace(tmp_path):
    """Finding 2: the read pauser stayed registered, so `loseConnection` waited for it forever and the socket and
    session leaked. Now the producer is unregistered at the kick and the connection is aborted after close_grace_s."""
    harness = Harness(tmp_path, secret=SECRET, limits=ConnectionLimits(login_timeout_s=2, close_grace_s=0.5))
    transport = UnreadPeerTransport()
    proto = connect(harness, transport)
    transport.producer.pauseProducing()  # the write buffer filled: Twisted paused us
    assert len(harness.context.sessions) == 1
    harness.clock.advance(2)  # the login deadline kicks it
    [kick] = replies(transport)
    assert kick.kicked.code == E.ERROR_CODE_UNAUTHENTICATED
    assert transport.producer is None, "the producer must not hold the close up"
    assert transport.disconnecting and not transport.lost
    harness.clock.advance(0.49)
    assert not transport.lost
    harness.clock.advance(0.01)
    assert transport.lost and len(harness.context.sessions) == 0
    proto.kick(E.ERROR_CODE_IDLE_TIMEOUT, "again")  # a late kick from another timer: harmless
    assert not harness.clock.getDelayedCalls()


def test_a_kick_on_a_transport_already_gone_raises_nothing_and_closes(tmp_path):
    """Finding 2: `RuntimeError: UVPoll closed` was raised inside `kick` from `_check_idle`; a kick on a transport
    that cannot be written any more must close it quietly instead."""
    harness = Harness(tmp_path, limits=ConnectionLimits(idle_timeout_s=5))
    transport = ClosedPollTransport()
    connect(harness, transport)
    harness.clock.advance(5)  # _check_idle -> kick -> write raises: nothing escapes the timer
    assert transport.lost and len(harness.context.sessions) == 0
    assert not harness.clock.getDelayedCalls()


def test_a_kicked_connection_that_flushes_is_not_aborted(tmp_path):
    """Finding 2: the grace timer is cancelled once the connection closed on its own."""
    harness = Harness(tmp_path, limits=ConnectionLimits(close_grace_s=1))
    transport = UnreadPeerTransport()
    proto = connect(harness, transport)
    proto.kick(E.ERROR_CODE_UNAVAILABLE, "shutting down")
    proto.connectionLost(Failure(ConnectionError("closed cleanly")))
    transport.lost = True
    assert not harness.clock.getDelayedCalls()


# --- Finding 8: a peer that does not read is not read ---------------------------------------------------------

class PausingTransport(StringTransport):
    """Pauses its producer once `limit` bytes are buffered, like a TCP transport whose peer stopped reading."""

    def __init__(self, limit: int) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) >= self.limit and self.producer is not None and self.producerState == "producing":
            self.producer.pauseProducing()


def test_frames_read_before_a_pause_wait_until_the_peer_reads_again(tmp_path):
    """Finding 8: a flood of small frames in one read used to be answered in full after the write buffer had
    filled (a 64 KB read of empty frames makes ~440 KB of errors). Now answering stops at the pause and goes on,
    in order, when the peer has read."""
    harness = Harness(tmp_path)
    transport = PausingTransport(limit=1)
    proto = connect(harness, transport)
    proto.dataReceived(b"".join(encode_frame(ping(i).SerializeToString()) for i in range(1, 6)))
    assert [r.request_id for r in replies(transport)] == [1]
    assert transport.producerState == "paused"
    transport.limit = 10**9
    transport.producer.resumeProducing()  # the peer read: Twisted resumes us
    assert [r.request_id for r in replies(transport)] == [2, 3, 4, 5]


# --- Finding 10: a deadline for a frame's body --------------------------------------------------------------------

def test_a_body_trickling_in_is_kicked_at_the_body_deadline_although_bytes_keep_coming(tmp_path):
    """Finding 10 (game half): one byte a second kept a connection (and its partial frame) forever, because every
    byte reset the idle timer. Once a header is in, the whole body must arrive within body_timeout_s."""
    harness = Harness(tmp_path, limits=ConnectionLimits(idle_timeout_s=60, body_timeout_s=5))
    proto, transport = harness.connect()
    proto.dataReceived(struct.pack(">IH", 100, 0))
    for _ in range(4):
        harness.clock.advance(1)
        proto.dataReceived(b"\x00")
        assert not transport.disconnecting
    harness.clock.advance(1)
    [kick] = replies(transport)
    assert kick.kicked.code == E.ERROR_CODE_TIMEOUT and "body" in kick.kicked.reason
    assert transport.disconnecting


def test_the_body_deadline_is_per_frame(tmp_path):
    """Finding 10: a body completed in time clears the deadline; the next frame's header starts its own."""
    harness = Harness(tmp_path, limits=ConnectionLimits(idle_timeout_s=60, body_timeout_s=5))
    proto, transport = harness.connect()
    first = encode_frame(ping(1).SerializeToString())
    second = encode_frame(ping(2).SerializeToString())
    proto.dataReceived(first[:-1])
    harness.clock.advance(4)
    proto.dataReceived(first[-1:] + second[:-1])  # frame 1 done, frame 2's header in: its deadline is t=9
    assert [r.request_id for r in replies(transport)] == [1]
    harness.clock.advance(4.5)
    assert not transport.disconnecting
    proto.dataReceived(second[-1:])
    assert [r.request_id for r in replies(transport)] == [2]
    harness.clock.advance(30)
    assert not transport.disconnecting and not harness.clock.getDelayedCalls()[1:]  # only the idle check is left


# --- Finding 9: token expiry ends the session ------------------------------------------------------------------

def test_a_session_is_kicked_when_its_token_expires(tmp_path):
    """Finding 9: a token's expiry was checked at login only; the session ran on after it expired."""
    harness = Harness(tmp_path, secret=SECRET, limits=ConnectionLimits(idle_timeout_s=1000))
    harness.clock.advance(1000)
    proto, transport = harness.connect()
    send(proto, login(1, TokenAuthority(SECRET).issue("carol", expires_at=1100)))
    assert replies(transport)[0].login.expires_at_unix == 1100
    harness.clock.advance(99)
    send(proto, infer_message(2, np.ones((1, 16), np.float32)))
    assert replies(transport)[0].HasField("infer")
    harness.clock.advance(1)
    [kick] = replies(transport)
    assert kick.kicked.code == E.ERROR_CODE_UNAUTHENTICATED and kick.kicked.reason == "token expired"
    assert transport.disconnecting


def test_a_re_login_moves_the_expiry(tmp_path):
    """Finding 9: a new token replaces the old deadline (not adds to it)."""
    harness = Harness(tmp_path, secret=SECRET, limits=ConnectionLimits(idle_timeout_s=1000))
    authority = TokenAuthority(SECRET)
    proto, transport = harness.connect()
    send(proto, login(1, authority.issue("carol", expires_at=100)))
    harness.clock.advance(50)
    send(proto, login(2, authority.issue("carol", expires_at=300)))
    replies(transport)
    harness.clock.advance(60)
    assert not transport.disconnecting and replies(transport) == []
    harness.clock.advance(190)
    assert replies(transport)[0].kicked.reason == "token expired"


def test_a_failed_re_login_logs_the_session_out(tmp_path):
    """Finding 9: a failed re-login left the earlier login in force; now the session is nobody until it logs in
    again (and the old token's expiry timer is gone with it)."""
    harness = Harness(tmp_path, secret=SECRET, limits=ConnectionLimits(idle_timeout_s=1000, login_timeout_s=1000))
    authority = TokenAuthority(SECRET)
    proto, transport = harness.connect()
    send(proto, login(1, authority.issue("dave", expires_at=500)))
    assert replies(transport)[0].login.user == "dave"
    send(proto, login(2, TokenAuthority("not-the-secret").issue("dave", 0)))
    assert replies(transport)[0].error.code == E.ERROR_CODE_UNAUTHENTICATED
    assert not proto.session.logged_in and harness.context.sessions.logged_in == 0
    send(proto, infer_message(3, np.ones((1, 16), np.float32)))
    [refused] = replies(transport)
    assert refused.error.code == E.ERROR_CODE_UNAUTHENTICATED and "log in" in refused.error.message
    harness.clock.advance(600)
    assert not transport.disconnecting  # no expiry kick for a login no longer in force
    send(proto, login(4, authority.issue("dave", 0)))
    assert replies(transport)[0].login.user == "dave"


# --- Finding 8: tokens that are not tokens --------------------------------------------------------------------

@pytest.mark.parametrize("token", ["v1.n\u00e4ive.t\u00f6ken", "\u2603" * 50, "v1." + "a" * (MAX_TOKEN_CHARS + 10)])
def test_non_ascii_and_oversized_tokens_are_unauthenticated_without_a_traceback(tmp_path, token):
    """Finding 8: a non-ASCII token made the login fail with an internal error (and a traceback in the log)."""
    harness = Harness(tmp_path, secret=SECRET)
    proto, transport = harness.connect()
    failures: list[dict] = []
    observer = lambda event: failures.append(event) if "log_failure" in event else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        send(proto, login(1, token))
    finally:
        globalLogPublisher.removeObserver(observer)
    [reply] = replies(transport)
    assert (reply.request_id, reply.error.code) == (1, E.ERROR_CODE_UNAUTHENTICATED)
    assert failures == [] and not transport.disconnecting
