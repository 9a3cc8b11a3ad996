"""All streams of a server process: open/close/subscribe (from game-protocol commands), datagram routing (from
the UDP endpoint), and the reaper that closes streams whose client went silent."""

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

from twinfer.errors import InvalidInput, ModelNotFound, Overloaded
from twinfer.inference.facade import InferenceFacade
from twinfer.protocol import game_pb2
from twinfer.security.receivers import ReceiverPolicy
from twinfer.streaming import datagram as dg
from twinfer.streaming.face_processor import (
    FACE_TRACKER_BACKEND,
    FaceTrackerProcessor,
    TrackerModels,
    solver_from,
)
from twinfer.streaming.one_euro import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF, OneEuroFilter
from twinfer.streaming.outputs import DEFAULT_PORTS, FORMATS
from twinfer.streaming.preprocess import PIXEL_FORMATS, image_layout
from twinfer.streaming.reassembly import PartialFrameBudget
from twinfer.streaming.stats import LatencyHistogram
from twinfer.streaming.stream import Address, Stream, Target

log = Logger()
MAX_TARGETS = 16
MAX_SIDE = 4096
MAX_FILTER_PARAMETER = 1000.0  # One Euro cutoffs in Hz (frames come at most a few hundred a second) and beta
JPEG_OVERHEAD_BYTES = 64 * 1024  # headers and tables on top of the raw pixels: a JPEG is never larger than this


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

    def attach(self, send: Callable[[bytes, Address], None], udp_port: int) -> None:
        """Called once the UDP port listens: how to send, and the port to advertise."""
        self._send = send
        self.udp_port = udp_port
        self._reaper.start(max(self.heartbeat_timeout_s / 4, 0.05), now=False)

    def stop(self) -> None:
        if self._reaper.running:
            self._reaper.stop()
        for stream_id in list(self.streams):
            self.close(stream_id)

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
        if config.backend == FACE_TRACKER_BACKEND:
            stream.processor = FaceTrackerProcessor(
                self.facade, self._run_blocking, TrackerModels.from_parameters(config.parameters), pixel_format,
                request.width, request.height, str(version.version), solver_from(version.backend),
                want_landmarks=request.want_landmarks)
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
            raise ModelNotFound(f"no stream {stream_id} on this session")
        return stream

    def close(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
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

    def close_owned_by(self, owner: Any) -> None:
        for stream in [s for s in self.streams.values() if s.owner is owner]:
            self.close(stream.id)

    def reap(self) -> None:
        now = self.clock.seconds()
        self.budget.expire(now)
        for stream in [s for s in self.streams.values() if now - s.last_heard > self.heartbeat_timeout_s]:
            log.info("stream {id}: silent for {s:.1f} s, closing", id=stream.id, s=now - stream.last_heard)
            self.close(stream.id)

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
