"""All streams of a server process: open/close/subscribe (from game-protocol commands), datagram routing (from
the UDP endpoint), and the reaper that closes streams whose client went silent or whose model went away.

What goes wrong with a stream reaches its session, not only the log and /metrics (issue #19): a stream the server
closes on its own sends the owner a StreamClosed event, and frames that fail are reported as FrameErrors, at most
one per reason per stream per report interval. The owner (a server Session) receives them through its
`stream_event(ServerMessage)`; owners without one (tests, tools) get nothing.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twinfer.errors import InvalidInput, ModelNotFound, ModelNotReady, Overloaded, StreamNotFound
from twinfer.inference.facade import InferenceFacade
from twinfer.protocol import game_pb2
from twinfer.protocol.error_codes import code_for
from twinfer.security.receivers import ReceiverPolicy
from twinfer.streaming import datagram as dg
from twinfer.streaming import pixels
from twinfer.streaming.face_processor import (
    FACE_TRACKER_BACKEND,
    FaceTrackerProcessor,
    TrackerModels,
    batches_across_streams,
    solver_from,
)
from twinfer.streaming.one_euro import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, OneEuroFilter
from twinfer.streaming.outputs import DEFAULT_PORTS, FORMATS
from twinfer.streaming.pixels import PIXEL_FORMATS
from twinfer.streaming.preprocess import image_layout
from twinfer.streaming.reassembly import PartialFrameBudget
from twinfer.streaming.stats import LatencyHistogram
from twinfer.streaming.stream import Address, Stream, Target

log = Logger()
MAX_TARGETS = 16
MAX_SIDE = 4096
MAX_FILTER_PARAMETER = 1000.0  # One Euro cutoffs in Hz (frames come at most a few hundred a second) and beta
JPEG_OVERHEAD_BYTES = 64 * 1024  # headers and tables on top of the raw pixels: a JPEG is never larger than this
CLOSE = game_pb2.StreamCloseReason
FRAME_ERROR_REASONS = {
    pixels.WRONG_SIZE: game_pb2.FRAME_ERROR_REASON_WRONG_SIZE,
    pixels.UNDECODABLE: game_pb2.FRAME_ERROR_REASON_UNDECODABLE,
    pixels.TOO_LARGE: game_pb2.FRAME_ERROR_REASON_TOO_LARGE,
    "inference": game_pb2.FRAME_ERROR_REASON_INFERENCE,
}


def max_frame_bytes(pixel_format: str, width: int, height: int, max_datagram_bytes: int) -> int:
    """The largest frame a stream can legitimately send: its raw size (JPEG: raw RGB plus headers), and never more
    than the datagram format can carry. A partial frame may not grow past it."""
    channels = PIXEL_FORMATS[pixel_format]
    size = width * height * channels if channels else width * height * 3 + JPEG_OVERHEAD_BYTES
    return min(size, dg.MAX_FRAGMENTS * (max_datagram_bytes - dg.OVERHEAD))


def one_euro_from(request: game_pb2.OpenStreamRequest) -> OneEuroFilter:
    """The request's One Euro parameters (0 = default); NaN, infinities, negatives and absurd values are
    InvalidInput, not a filter that turns every output into NaN."""
    values = {}
    for name, default in (("min_cutoff", DEFAULT_MIN_CUTOFF), ("beta", DEFAULT_BETA), ("d_cutoff", DEFAULT_D_CUTOFF)):
        value = getattr(request, name)
        if not math.isfinite(value) or value < 0 or value > MAX_FILTER_PARAMETER:
            raise InvalidInput(f"{name} {value!r} outside 0..{MAX_FILTER_PARAMETER:g} (0 = default "
                               f"{default:g})")
        values[name] = value or default
    return OneEuroFilter(values["min_cutoff"], values["beta"], values["d_cutoff"])


def parse_receiver_spec(spec: str) -> Target:
    """`vmc:127.0.0.1:39539` (from settings) -> Target."""
    kind, _, address = spec.partition(":")
    host, _, port = address.rpartition(":")
    if not kind or not port.isdigit():
        raise InvalidInput(f"receiver {spec!r}: expected KIND:HOST:PORT, e.g. vmc:127.0.0.1:39539")
    return parse_target(game_pb2.StreamTarget(kind=kind, host=host, port=int(port)))


def parse_target(target: game_pb2.StreamTarget) -> Target:
    kind = target.kind or "native"
    if kind not in FORMATS:
        raise InvalidInput(f"unknown target kind {kind!r}; expected one of {', '.join(FORMATS)}")
    host = "127.0.0.1" if target.host in ("", "localhost") else target.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(f"target host {target.host!r} must be an IP address (the server does no DNS)") from None
    port = target.port or DEFAULT_PORTS.get(kind, 0)
    if not 1 <= port <= 65535:
        raise InvalidInput(f"target port {target.port} out of range")
    return Target(kind, host, port, target.subject or "twinfer")


class StreamManager:
    def __init__(
        self,
        facade: InferenceFacade,
        clock: IReactorTime,
        run_blocking: Callable[..., Any],
        advertised_host: str,
        heartbeat_timeout_s: float = 5.0,
        max_datagram_bytes: int = 65000,
        max_streams: int = 1024,
        default_targets: list[Target] | None = None,
        max_streams_per_session: int = 8,
        max_partial_frame_bytes: int = 256 * 1024 * 1024,
        frame_deadline_s: float = 1.0,
        receivers: ReceiverPolicy | None = None,
    ) -> None:
        self.facade = facade
        self.clock = clock
        self._run_blocking = run_blocking
        self.advertised_host = advertised_host
        self.udp_port = 0
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_datagram_bytes = max_datagram_bytes
        self.max_streams = max_streams
        self.max_streams_per_session = max_streams_per_session
        self.default_targets = list(default_targets or [])  # every stream sends to these too (from config): trusted
        self.receivers = receivers if receivers is not None else ReceiverPolicy()
        self.budget = PartialFrameBudget(max_partial_frame_bytes, frame_deadline_s)  # shared by every stream
        self.streams: dict[int, Stream] = {}
        self.dropped: Counter[str] = Counter()  # datagrams dropped before reaching a stream, by reason
        self.closed_stats: Counter[str] = Counter()  # totals of streams already closed
        self.closed_latency = LatencyHistogram()  # latencies of streams already closed
        self._ids = itertools.count(1)
        self._send: Callable[[bytes, Address], None] = lambda data, addr: None
        self._reaper = LoopingCall(self.reap)
        self._reaper.clock = clock
        self.report_interval_s = max(heartbeat_timeout_s / 4, 0.05)  # reaper period; FrameErrors rate limit

    def attach(self, send: Callable[[bytes, Address], None], udp_port: int) -> None:
        """Called once the UDP port listens: how to send, and the port to advertise."""
        self._send = send
        self.udp_port = udp_port
        self._reaper.start(self.report_interval_s, now=False)

    def stop(self, detail: str = "server shutting down") -> None:
        """Close every stream, telling each owner (the drain on SIGTERM)."""
        if self._reaper.running:
            self._reaper.stop()
        for stream_id in list(self.streams):
            self.close(stream_id, CLOSE.STREAM_CLOSE_REASON_SERVER_DRAIN, detail)

    def describe(self, caps: game_pb2.Capabilities) -> None:
        """The stream half of the Capabilities a login reply advertises."""
        caps.target_kinds.extend(FORMATS)
        caps.pixel_formats.extend(PIXEL_FORMATS)
        caps.max_datagram_bytes = self.max_datagram_bytes
        caps.max_fragments = dg.MAX_FRAGMENTS
        caps.max_streams_per_session = self.max_streams_per_session
        caps.heartbeat_timeout_s = self.heartbeat_timeout_s
        caps.max_side = MAX_SIDE

    # --- control (from game-protocol commands) ------------------------------------------------------------------

    def open(self, owner: Any, request: game_pb2.OpenStreamRequest, peer_host: str = "") -> Stream:
        """A new stream for `owner` (a session connected from `peer_host`, which bounds where results may go)."""
        if len(self.streams) >= self.max_streams:
            raise Overloaded(f"{self.max_streams} streams open; close one first")
        owned = sum(1 for s in self.streams.values() if s.owner is owner)
        if owned >= self.max_streams_per_session:
            raise Overloaded(f"this session has {owned} streams open (max_streams_per_session); close one first")
        pixel_format = request.pixel_format or "GRAY8"
        if pixel_format not in PIXEL_FORMATS:
            raise InvalidInput(f"pixel_format {pixel_format!r}; expected one of {', '.join(PIXEL_FORMATS)}")
        if not (1 <= request.width <= MAX_SIDE and 1 <= request.height <= MAX_SIDE):
            raise InvalidInput(f"frame size {request.width}x{request.height} outside 1..{MAX_SIDE}")
        smoothing = one_euro_from(request) if request.smoothing else None
        requested = [parse_target(t) for t in request.targets]
        for target in requested:
            self.receivers.check(target.host, peer_host)
        targets = [*self.default_targets, *requested]
        if len(targets) > MAX_TARGETS:
            raise InvalidInput(f"at most {MAX_TARGETS} targets per stream")
        version = self.facade.resolve(request.model, request.version or None)
        config = version.config
        layout = image_layout(config)
        output = config.outputs[0]
        labels = output.labels or tuple(f"{output.name}_{i}" for i in range(max(output.dims[-1], 0) if output.dims
                                                                             else 0))
        stream = Stream(next(self._ids), owner, config.name, request.version or None, pixel_format, request.width,
                        request.height, layout, config.batching, output.name, tuple(labels), smoothing, self.facade,
                        self._run_blocking, self._send, self.clock.seconds(),
                        max_frame_bytes=max_frame_bytes(pixel_format, request.width, request.height,
                                                        self.max_datagram_bytes),
                        budget=self.budget)
        stream.want_landmarks = request.want_landmarks
        stream.bottom_up = request.bottom_up
        stream.on_failure = self._frame_failed
        if config.backend == FACE_TRACKER_BACKEND:
            stream.processor = FaceTrackerProcessor(
                self.facade, self._run_blocking, TrackerModels.from_parameters(config.parameters), pixel_format,
                request.width, request.height, str(version.version), solver_from(version.backend),
                want_landmarks=request.want_landmarks, bottom_up=request.bottom_up,
                batch_across_streams=batches_across_streams(version.backend))
        for target in targets:
            stream.add_target(target)
        self.streams[stream.id] = stream
        log.info("stream {id} opened: model {model} {w}x{h} {fmt}, {n} receivers", id=stream.id, model=config.name,
                 w=request.width, h=request.height, fmt=pixel_format, n=len(stream.targets))
        return stream

    def subscribe(self, stream: Stream, target: Target, peer_host: str) -> None:
        """Add a receiver a client asked for: allowed networks only, at most MAX_TARGETS."""
        self.receivers.check(target.host, peer_host)
        if target not in stream.targets and len(stream.targets) >= MAX_TARGETS:
            raise InvalidInput(f"at most {MAX_TARGETS} targets per stream")
        stream.add_target(target)

    def get(self, stream_id: int, owner: Any) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None or stream.owner is not owner:
            raise StreamNotFound(f"no stream {stream_id} on this session")
        return stream

    def close(self, stream_id: int, reason: int = CLOSE.STREAM_CLOSE_REASON_UNSPECIFIED, detail: str = "") -> None:
        """Close a stream. A `reason` means the server closed it on its own: the owner hears why (StreamClosed),
        after any frame failures not yet reported."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if reason != CLOSE.STREAM_CLOSE_REASON_UNSPECIFIED:
            self._report_failures(stream, self.clock.seconds())
            event = game_pb2.ServerMessage(request_id=0)
            event.stream_closed.stream_id = stream_id
            event.stream_closed.reason = reason
            event.stream_closed.detail = detail
            _notify(stream.owner, event)
        stream.closed = True
        stream.assembler.close()
        s = stream.stats
        for key, value in (("frames_in", s.frames_in), ("frames_out", s.frames_out),
                           ("frames_skipped", s.frames_skipped), ("frames_failed", s.frames_failed)):
            self.closed_stats[key] += value
        for reason, count in s.dropped.items():
            self.dropped[reason] += count
        self.closed_latency.merge(s.latency)
        log.info("stream {id} closed: {fin} frames in, {fout} out, {skip} skipped", id=stream_id, fin=s.frames_in,
                 fout=s.frames_out, skip=s.frames_skipped)

    def last_heard_by(self, owner: Any) -> list[float]:
        """When each of `owner`'s streams last received an authentic datagram (frames and heartbeats)."""
        return [s.last_heard for s in self.streams.values() if s.owner is owner]

    def close_owned_by(self, owner: Any) -> None:
        for stream in [s for s in self.streams.values() if s.owner is owner]:
            self.close(stream.id)

    def reap(self) -> None:
        """Close silent streams and streams whose model is gone; report frame failures that waited their turn."""
        now = self.clock.seconds()
        self.budget.expire(now)
        for stream in list(self.streams.values()):
            silent = now - stream.last_heard
            if silent > self.heartbeat_timeout_s:
                log.info("stream {id}: silent for {s:.1f} s, closing", id=stream.id, s=silent)
                self.close(stream.id, CLOSE.STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT,
                           f"no datagram for {silent:.1f} s (heartbeat_timeout_s {self.heartbeat_timeout_s:g})")
                continue
            try:
                self.facade.resolve(stream.model, stream.version)
            except (ModelNotFound, ModelNotReady) as exc:
                log.info("stream {id}: {error}, closing", id=stream.id, error=exc.message)
                self.close(stream.id, CLOSE.STREAM_CLOSE_REASON_MODEL_UNLOADED, exc.message)
                continue
            if now - stream.failures.last_report >= self.report_interval_s:
                self._report_failures(stream, now)

    # --- reports to the owner -------------------------------------------------------------------------------

    def _frame_failed(self, stream: Stream) -> None:
        """A frame failed: report at once after a quiet interval, else the reaper reports it with the next ones."""
        now = self.clock.seconds()
        if now - stream.failures.last_report >= self.report_interval_s:
            self._report_failures(stream, now)

    def _report_failures(self, stream: Stream, now: float) -> None:
        for reason, tally in stream.failures.take(now):
            event = game_pb2.ServerMessage(request_id=0)
            report = event.frame_errors
            report.stream_id = stream.id
            report.reason = FRAME_ERROR_REASONS[reason]
            report.count = tally.pending
            report.total = tally.total
            report.last_sequence = tally.last_sequence
            report.message = tally.message
            report.code = code_for(tally.code_error) if tally.code_error is not None else 0
            _notify(stream.owner, event)

    # --- datagrams (from the UDP endpoint) ----------------------------------------------------------------------

    def datagram_received(self, data: bytes) -> None:
        """Route one datagram; every problem is a counted drop, never an exception."""
        stream: Stream | None = None
        try:
            if len(data) > self.max_datagram_bytes:
                raise dg.DatagramError("oversized")
            stream = self.streams.get(dg.peek_stream_id(data))
            if stream is None:
                raise dg.DatagramError("unknown_stream")
            stream.datagram(dg.decode(stream.signer, data), self.clock.seconds())
        except dg.DatagramError as exc:
            (stream.stats.dropped if stream is not None else self.dropped)[exc.reason] += 1


def _notify(owner: Any, event: game_pb2.ServerMessage) -> None:
    send = getattr(owner, "stream_event", None)
    if send is not None:
        send(event)
