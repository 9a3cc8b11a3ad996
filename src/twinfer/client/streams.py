"""The capture side of a stream: open it over the game protocol, send frames and heartbeats over UDP."""

from __future__ import annotations

import itertools
import socket
import time

import numpy as np

from twinfer.client.blocking import Client
from twinfer.protocol import game_pb2
from twinfer.streaming import datagram as dg


def target(kind: str, address: str, subject: str = "") -> game_pb2.StreamTarget:
    """A receiver from "HOST:PORT" (or ":PORT" for 127.0.0.1)."""
    host, _, port = address.rpartition(":")
    return game_pb2.StreamTarget(kind=kind, host=host or "127.0.0.1", port=int(port), subject=subject)


class StreamSender:
    """One open stream. Frames are numpy uint8 images (H, W) for GRAY8, (H, W, 3) for RGB8, (H, W, 4) for RGBA8 or
    BGRA8, or JPEG bytes; `bottom_up`: row 0 of every frame is the image's bottom row (docs/protocol.md 5)."""

    def __init__(self, client: Client, model: str, width: int, height: int, pixel_format: str = "GRAY8",
                 targets: list[game_pb2.StreamTarget] | None = None, smoothing: bool = False,
                 version: str | None = None, want_landmarks: bool = False, bottom_up: bool = False) -> None:
        self.client = client
        request = game_pb2.OpenStreamRequest(model=model, version=version or "", pixel_format=pixel_format,
                                             width=width, height=height, targets=targets or [], smoothing=smoothing,
                                             want_landmarks=want_landmarks, bottom_up=bottom_up)
        self.info = client.open_stream(request)
        self.stream_id = self.info.stream_id
        self.labels = list(self.info.labels)
        self._key = dg.Signer(bytes(self.info.key))
        self._address = (self.info.udp_host, self.info.udp_port)
        self._sequence = itertools.count(1)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.last_sent = time.monotonic()

    def send_frame(self, image: np.ndarray | bytes, capture_time_ns: int | None = None) -> int:
        """Sign, fragment and send one frame (pixels, or JPEG bytes); returns its sequence number."""
        sequence = next(self._sequence)
        capture = capture_time_ns if capture_time_ns is not None else time.time_ns()
        if isinstance(image, (bytes, bytearray)):
            payload = bytes(image)
        else:
            payload = np.ascontiguousarray(image, np.uint8).tobytes()
        for datagram in dg.fragment_frame(self._key, self.stream_id, sequence, capture, payload,
                                          self.info.max_datagram_bytes):
            self._sock.sendto(datagram, self._address)
        self.last_sent = time.monotonic()
        return sequence

    def heartbeat(self) -> None:
        self._sock.sendto(dg.heartbeat(self._key, self.stream_id, next(self._sequence), time.time_ns()),
                          self._address)
        self.last_sent = time.monotonic()

    def subscribe(self, receiver: game_pb2.StreamTarget) -> int:
        return self.client.subscribe(self.stream_id, receiver).targets

    def unsubscribe(self, receiver: game_pb2.StreamTarget) -> int:
        return self.client.unsubscribe(self.stream_id, receiver).targets

    def calibrate(self, seconds: float) -> game_pb2.CalibrationStatus:
        """Take the user's neutral face over `seconds` (face_tracker streams); results report the state."""
        return self.client.calibrate(self.stream_id, seconds)

    def close(self) -> None:
        try:
            self.client.close_stream(self.stream_id)
        finally:
            self._sock.close()

    def __enter__(self) -> StreamSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
