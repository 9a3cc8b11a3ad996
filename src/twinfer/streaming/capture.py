"""`twinfer stream`: the capture side. Opens a stream, sends frames at a steady rate, listens to its own results
(a native receiver on this machine) and shows a live line: fps sent and received, frames dropped, latency, and for
face_tracker streams whether a face is tracked, the head pose and the calibration state."""

from __future__ import annotations

import io
import json
import math
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from twinfer.client import Client
from twinfer.client.streams import StreamSender, target
from twinfer.errors import ConfigError
from twinfer.protocol import game_pb2
from twinfer.streaming.frame_sources import open_source

__all__ = ["open_source", "run_capture"]


class _Recorder:
    """JSON lines of what was sent, for `twinfer receive --compare` (or any tool): seq, t (wall clock), values."""

    def __init__(self, path: Path | None) -> None:
        try:
            self.file = open(path, "w", encoding="utf-8") if path is not None else None  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"--record {path}: {exc.strerror or exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def write(self, seq: int, values: dict[str, float] | None) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"seq": seq, "t": time.time(), "values": values}) + "\n")


@dataclass
class _Tally:
    sent: int = 0
    received: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    face: game_pb2.FaceResult | None = None  # the latest result's face (face_tracker streams)
    lock: threading.Lock = field(default_factory=threading.Lock)


CALIBRATION_NAMES = {game_pb2.CALIBRATION_STATE_NONE: "not calibrated",
                     game_pb2.CALIBRATION_STATE_CALIBRATING: "calibrating",
                     game_pb2.CALIBRATION_STATE_CALIBRATED: "calibrated"}


def as_pixel_format(image: np.ndarray, pixel_format: str) -> np.ndarray:
    """A source frame (HxW grey or HxWx3 RGB uint8) in the stream's raw format (docs/protocol.md 5)."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    if pixel_format == "GRAY8":
        if image.ndim == 2:
            return image
        return (rgb @ np.array([0.299, 0.587, 0.114])).round().clip(0, 255).astype(np.uint8)  # ITU-R BT.601
    if pixel_format == "RGB8":
        return rgb
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([rgb if pixel_format == "RGBA8" else rgb[..., ::-1], alpha], axis=2)


def describe_face(face: game_pb2.FaceResult | None) -> str:
    """` | face yaw +12 pitch -3 roll +1 deg, calibrated` (empty for streams without a face)."""
    if face is None:
        return ""
    if not face.tracked:
        return f" | no face, {CALIBRATION_NAMES.get(face.calibration, '?')}"
    yaw, pitch, roll = (math.degrees(a) for a in (face.head_yaw, face.head_pitch, face.head_roll))
    landmarks = f", {len(face.landmarks) // 3} landmarks" if face.landmarks else ""
    return (f" | face yaw {yaw:+4.0f} pitch {pitch:+4.0f} roll {roll:+4.0f} deg, "
            f"{CALIBRATION_NAMES.get(face.calibration, '?')}{landmarks}")


def _listen(sock: socket.socket, tally: _Tally, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data = sock.recv(65535)
        except TimeoutError:
            continue
        except OSError:
            return
        result = game_pb2.StreamResult.FromString(data)
        with tally.lock:
            tally.face = result.face if result.HasField("face") else None
            tally.received += 1
            tally.latencies_ms.append((time.time_ns() - result.capture_time_ns) / 1e6)


def _receiver(kind: str, address: str) -> game_pb2.StreamTarget:
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--{kind} {address!r}: expected HOST:PORT")
    return target(kind, address)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """One frame (H, W) or (H, W, 3) uint8 as JPEG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def run_capture(server: str, model: str, source: str, fps: float, seconds: float, receivers: list[tuple[str, str]],
                token: str | None = None, smoothing: bool = False, out=sys.stdout, record: Path | None = None,
                size: int = 256, calibrate_seconds: float | None = None, jpeg_quality: int | None = None,
                pixel_format: str | None = None, want_landmarks: bool = False) -> int:
    """Stream `source` to `model`; with `record`, write one JSON line per frame sent (sequence number, wall-clock
    send time, the synthetic face's driving values) so what receivers got can be compared with what was sent;
    with `calibrate_seconds`, ask the server to take the user's neutral face over that long once the stream is
    open; with `jpeg_quality`, send each frame as a JPEG of that quality (what a camera client on a network should
    do: a 640x480 RGB frame is 900 KB raw, ~40 KB as JPEG 85). Local problems (a bad source, --fps 0) raise
    ConfigError before anything is sent."""
    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"--fps {fps:g}: expected a number of frames per second above 0")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds {seconds:g}: expected a duration above 0")
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--server {server!r}: expected HOST:PORT")
    if calibrate_seconds is not None and not (math.isfinite(calibrate_seconds) and 0 < calibrate_seconds <= 60):
        raise ConfigError(f"--calibrate-seconds {calibrate_seconds:g}: expected 0 < seconds <= 60")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"--jpeg {jpeg_quality}: expected a quality from 1 to 100")
    if jpeg_quality is not None and pixel_format is not None:
        raise ConfigError("--jpeg and --pixel-format: choose one (a JPEG carries its own pixels)")
    targets = [_receiver(kind, address) for kind, address in receivers]
    frames = open_source(source, fps, size)
    first, driving = next(frames)
    height, width = first.shape[:2]
    pixel_format = ("JPEG" if jpeg_quality is not None else pixel_format or ("RGB8" if first.ndim == 3 else "GRAY8"))
    with _Recorder(record) as recorder, \
            Client(host, int(port), token=token, client_name="twinfer-stream") as client:
        local_host = client._sock.getsockname()[0]
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((local_host, 0))
        targets.append(target("native", f"{local_host}:{listener.getsockname()[1]}"))
        tally, stop = _Tally(), threading.Event()
        thread = threading.Thread(target=_listen, args=(listener, tally, stop), daemon=True)
        thread.start()
        with StreamSender(client, model, width, height, pixel_format, targets, smoothing,
                          want_landmarks=want_landmarks) as sender:
            print(f"stream {sender.stream_id}: {width}x{height} {pixel_format} at {fps:g} fps -> {model}, "
                  f"{len(targets) - 1} receiver(s)", file=out)
            if calibrate_seconds is not None:
                status = sender.calibrate(calibrate_seconds)
                print(f"calibrating for {status.seconds_left:g} s: keep a neutral face, look at the camera",
                      file=out)
            start = time.monotonic()
            next_report, last_sent, last_received, image = start + 1, 0, 0, first
            total = max(round(fps * seconds), 1)  # --seconds of content at --fps; a slow machine catches up late
            while tally.sent < total:
                now = time.monotonic()
                due = start + tally.sent / fps
                if now < due:
                    time.sleep(min(due - now, 0.05))
                    continue
                recorder.write(tally.sent, driving)
                sender.send_frame(encode_jpeg(image, jpeg_quality) if jpeg_quality is not None
                                  else as_pixel_format(image, pixel_format))
                tally.sent += 1
                try:
                    image, driving = next(frames)
                except StopIteration:
                    print("the source ended", file=out)
                    break
                if now >= next_report:
                    with tally.lock:
                        recent = tally.latencies_ms[-max(int(fps), 1) :] or [float("nan")]
                        received, face = tally.received, tally.face
                    print(f"sent {tally.sent - last_sent:4d} fps | received {received - last_received:4d} fps | "
                          f"dropped {max(tally.sent - received, 0):5d} | latency p50 "
                          f"{np.percentile(recent, 50):6.2f} ms p99 {np.percentile(recent, 99):6.2f} ms"
                          f"{describe_face(face)}", file=out)
                    last_sent, last_received, next_report = tally.sent, received, next_report + 1
            deadline = time.monotonic() + 1.0
            while tally.received < tally.sent and time.monotonic() < deadline:
                time.sleep(0.01)  # let the last results arrive
        stop.set()
        thread.join(1)
        listener.close()
    lat = tally.latencies_ms or [float("nan")]
    print(f"done: sent {tally.sent}, received {tally.received} "
          f"({100 * tally.received / max(tally.sent, 1):.1f} %), latency p50 {np.percentile(lat, 50):.2f} ms "
          f"p99 {np.percentile(lat, 99):.2f} ms", file=out)
    return 0
