"""One game-protocol connection: frames in, commands dispatched, replies out. It holds no business logic.

Bad input costs the sender and nobody else: an oversized declared length is refused before any body is buffered
and closes the connection; a body that does not parse, an unknown message type or a request that fails gets a
typed Error reply and the connection keeps going; too many requests in flight get OVERLOADED. A peer that stops
reading stops being read (ReadPauser), and frames already read wait until it reads again. Once a frame's header is
in, its body must follow within body_timeout_s. A kicked connection is gone within close_grace_s: its goodbye is
flushed if the peer reads it, else the socket is aborted. Nothing is left unanswered: before the Kicked, every
request still in flight gets an Error with the kick's code (the drain on SIGTERM: UNAVAILABLE). request_id 0 is the
server's (Kicked, stream events): a request that uses it is refused, not run.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer
from twisted.python.failure import Failure

from twinfer.backpressure import ReadPauser, read_pauser_for
from twinfer.tcp_ack import ack_now
from twinfer.errors import (
    FrameTooLarge,
    InvalidFrame,
    MalformedMessage,
    Overloaded,
    TwinferError,
    Unauthenticated,
    Unavailable,
    UnknownMessage,
)
from twinfer.protocol import game_pb2
from twinfer.protocol.error_codes import code_for, code_name
from twinfer.protocol.framing import KNOWN_FLAGS, FrameDecoder, encode_frame
from twinfer.protocol.version import MIN_PROTOCOL_VERSION
from twinfer.server.commands import CommandRegistry, ServerContext
from twinfer.server.sessions import Session

log = Logger()
E = game_pb2.ErrorCode


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_frame_bytes: int = 16 * 1024 * 1024
    max_in_flight: int = 256
    idle_timeout_s: float = 60.0
    login_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    close_grace_s: float = 2.0


@implementer(IHandshakeListener)
class GameConnection(Protocol):
    def __init__(self, factory: GameServerFactory) -> None:
        self.factory = factory
        self._limits = factory.limits
        self._clock: IReactorTime = factory.context.clock
        self._decoder = FrameDecoder(self._limits.max_frame_bytes)
        self._closing = False
        self._last_seen = 0.0
        self._idle_call: IDelayedCall | None = None
        self._login_call: IDelayedCall | None = None
        self._body_call: IDelayedCall | None = None
        self._body_header = 0  # which frame (FrameDecoder.headers_seen) the body deadline is for
        self._abort_call: IDelayedCall | None = None
        self._pending: set[int] = set()  # request ids not yet answered
        self.session: Session | None = None

    # --- connection lifecycle ----------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)  # small RPC answers: never wait for Nagle
        self._pauser = read_pauser_for(self.transport)
        self._pauser.on_resume = self._handle_buffered
        peer = self.transport.getPeer()
        host = getattr(peer, "host", "")
        self.session = Session(self, f"{host or '?'}:{getattr(peer, 'port', '?')}", host=host)
        self.factory.context.sessions.add(self.session)
        self._last_seen = self._clock.seconds()
        self._idle_call = self._clock.callLater(self._limits.idle_timeout_s, self._check_idle)
        if self.factory.context.auth.required:
            self._login_call = self._clock.callLater(self._limits.login_timeout_s, self._check_login)

    def handshakeCompleted(self) -> None:
        """TLS only: now the read pauser can be registered (see backpressure.HandshakePending)."""
        if not self._closing and not self._pauser.registered:
            self._pauser = ReadPauser(self.transport)
            self._pauser.on_resume = self._handle_buffered

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closing = True
        self._cancel_timers(self._abort_call)
        if self.session is not None:
            self.factory.context.sessions.remove(self.session)
            if self.factory.context.streams is not None:
                self.factory.context.streams.close_owned_by(self.session)

    def _last_activity(self) -> float:
        """The last time this peer was heard: on this connection, or by a stream it owns (a capture client sends
        its frames and heartbeats over UDP and may say nothing on TCP for minutes)."""
        streams = self.factory.context.streams
        if streams is None or self.session is None:
            return self._last_seen
        return max([self._last_seen, *streams.last_heard_by(self.session)])

    def _check_idle(self) -> None:
        self._idle_call = None
        silent = self._clock.seconds() - self._last_activity()
        if silent >= self._limits.idle_timeout_s:
            self.kick(E.ERROR_CODE_IDLE_TIMEOUT, f"nothing received for {silent:.1f} s")
        else:
            self._idle_call = self._clock.callLater(self._limits.idle_timeout_s - silent, self._check_idle)

    def _check_login(self) -> None:
        self._login_call = None
        if self.session is not None and not self.session.logged_in:
            self.kick(E.ERROR_CODE_UNAUTHENTICATED, f"no login within {self._limits.login_timeout_s:g} s")

    def _body_late(self) -> None:
        self._body_call = None
        self.kick(E.ERROR_CODE_TIMEOUT, f"frame body not received within {self._limits.body_timeout_s:g} s of its "
                  "header")

    def _cancel_timers(self, *more: IDelayedCall | None) -> None:
        for call in (self._idle_call, self._login_call, self._body_call, *more):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._login_call = self._body_call = None

    def kick(self, code: int, reason: str) -> None:
        """Tell the peer why, then close: gracefully if the goodbye flushes, aborted after close_grace_s if not.

        Safe from any timer at any time: a second kick, or a transport already closing or gone (a write that
        raises), is not an error. The read pauser is unregistered first: a transport with a paused producer
        never finishes `loseConnection`.
        """
        if self._closing:
            return
        self._closing = True
        self._cancel_timers()
        log.info("closing {peer}: {code} {reason}", peer=self.session.peer if self.session else "?",
                 code=code_name(code), reason=reason)
        message = game_pb2.ServerMessage()
        message.kicked.code = code
        message.kicked.reason = reason
        try:
            self._pauser.unregister()
            pending, self._pending = sorted(self._pending), set()
            for request_id in pending:
                self.transport.write(encode_frame(_error_message(request_id, code, reason).SerializeToString()))
            self._send(message)
            self.transport.loseConnection()
        except Exception as exc:  # noqa: BLE001 - the transport is already going; make sure it goes
            log.debug("kick {peer}: transport already closing ({error!r})", peer=self.session.peer
                      if self.session else "?", error=exc)
            self._abort()
            return
        self._abort_call = self._clock.callLater(self._limits.close_grace_s, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        try:
            self.transport.abortConnection()
        except Exception as exc:  # noqa: BLE001 - nothing left to close
            log.debug("abort: {error!r}", error=exc)

    # --- bytes in ----------------------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_seen = self._clock.seconds()
        self._handle(data)

    def _handle_buffered(self) -> None:
        """Reading resumed: answer the frames read before the pause, then read on."""
        if not self._closing:
            self._handle(b"")

    def _handle(self, data: bytes) -> None:
        decoder = self._decoder
        try:
            for flags, body in decoder.feed(data):
                self._frame_received(flags, body)
                if self._closing or self._pauser.paused:
                    break  # the rest stays in the decoder until the peer reads our answers
        except FrameTooLarge as exc:
            self.kick(E.ERROR_CODE_FRAME_TOO_LARGE, exc.message)
            return
        if self._closing:
            return
        if decoder.buffered:
            ack_now(self.transport)  # a frame spans reads: let a Nagle client send the rest (tcp_ack)
        if decoder.receiving_body:
            if self._body_call is None or self._body_header != decoder.headers_seen:
                if self._body_call is not None:
                    self._body_call.cancel()
                self._body_header = decoder.headers_seen
                self._body_call = self._clock.callLater(self._limits.body_timeout_s, self._body_late)
        elif self._body_call is not None:
            self._body_call.cancel()
            self._body_call = None

    def _frame_received(self, flags: int, body: bytes) -> None:
        message = game_pb2.ClientMessage()
        try:
            message.ParseFromString(body)
        except DecodeError:
            self._send_error(0, MalformedMessage(f"a {len(body)}-byte body that is not a ClientMessage"))
            return
        request_id = message.request_id
        if request_id == 0:
            self._send_error(0, MalformedMessage("request_id 0 is reserved for server events: number requests from 1"))
            return
        if flags & ~KNOWN_FLAGS:
            self._send_error(request_id, InvalidFrame(f"unknown flag bits 0x{flags:04x}"))
            return
        kind = message.WhichOneof("body")
        command = self.factory.registry.get(kind)
        if command is None:
            self._send_error(request_id, UnknownMessage("empty or unknown message type"))
            return
        session = self.session
        assert session is not None
        if command.requires_login and not session.logged_in and self.factory.context.auth.required:
            self._send_error(request_id, Unauthenticated(f"log in before sending {kind}"))
            return
        if session.in_flight >= self._limits.max_in_flight:
            self._send_error(request_id, Overloaded(f"more than {self._limits.max_in_flight} requests in flight"))
            return
        if self.factory.draining and kind == "infer":
            self._send_error(request_id, Unavailable("server is shutting down"))
            return
        session.in_flight += 1
        self._pending.add(request_id)
        reply = game_pb2.ServerMessage(request_id=request_id)
        try:
            answer = command.execute(session, message, reply)
        except Exception as exc:  # noqa: BLE001 - a command's error (typed or not) becomes this request's answer
            self._answer_failed(Failure(exc), request_id)
            return
        if isinstance(answer, Deferred):
            # one callback pair answers and counts the request done (was two: each costs a turn of _runCallbacks)
            answer.addCallbacks(self._answered, self._answer_failed, callbackArgs=(request_id,),
                                errbackArgs=(request_id,))
        else:
            self._answered(answer, request_id)

    # --- bytes out ---------------------------------------------------------------------------------------------

    def send_event(self, message: game_pb2.ServerMessage) -> None:
        """A server event (request_id 0: StreamClosed, FrameErrors) for this client; dropped once closing."""
        self._send(message)

    def _request_done(self, request_id: int) -> None:
        self._pending.discard(request_id)
        if self.session is not None:
            self.session.in_flight -= 1
            self.factory.request_finished()

    def _answered(self, reply: game_pb2.ServerMessage, request_id: int) -> None:
        try:
            self._send(reply)
        finally:
            self._request_done(request_id)

    def _answer_failed(self, failure: Failure, request_id: int) -> None:
        try:
            self._reply_failed(failure, request_id)
        finally:
            self._request_done(request_id)

    def _reply_failed(self, failure: Failure, request_id: int) -> None:
        error = failure.value
        if not isinstance(error, TwinferError):
            log.failure("command failed", failure)
        self._send_error(request_id, error)

    def _send_error(self, request_id: int, error: BaseException) -> None:
        self._send(_error_message(request_id, code_for(error),
                                  error.message if isinstance(error, TwinferError) else "internal server error"))

    def _send(self, message: game_pb2.ServerMessage) -> None:
        if self.transport is not None and (not self._closing or message.HasField("kicked")):
            self.transport.write(encode_frame(message.SerializeToString()))


class GameServerFactory(Factory):
    """Shared by every connection on the TCP port: the command registry, the context and the limits."""

    protocol = GameConnection
    noisy = False  # no log line per connection

    def __init__(self, context: ServerContext, registry: CommandRegistry, limits: ConnectionLimits) -> None:
        self.context = context
        self.registry = registry
        self.limits = limits
        self.draining = False
        self._idle_waiters: list[Deferred[None]] = []
        if context.capabilities is None:
            context.capabilities = capabilities(limits, context)

    def buildProtocol(self, addr):  # type: ignore[override]
        return GameConnection(self)

    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.context.sessions.all())

    def request_finished(self) -> None:
        if self._idle_waiters and self.in_flight() == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def drain(self) -> Deferred[None]:
        """Refuse new inferences; the Deferred fires once every request in flight has been answered."""
        self.draining = True
        if self.in_flight() == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def close_all(self, reason: str) -> None:
        for session in self.context.sessions.all():
            session.connection.kick(E.ERROR_CODE_UNAVAILABLE, reason)


def _error_message(request_id: int, code: int, text: str) -> game_pb2.ServerMessage:
    message = game_pb2.ServerMessage(request_id=request_id)
    message.error.code = code
    message.error.message = text
    return message


def capabilities(limits: ConnectionLimits, context: ServerContext) -> game_pb2.Capabilities:
    """What LoginResponse tells every client this server speaks and allows (the stream part from the streams)."""
    caps = game_pb2.Capabilities(min_protocol_version=MIN_PROTOCOL_VERSION, max_frame_bytes=limits.max_frame_bytes,
                                 max_in_flight=limits.max_in_flight)
    if context.streams is not None:
        context.streams.describe(caps)
    return caps
