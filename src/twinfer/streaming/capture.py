"""`twinfer stream`: the capture side. Opens a stream, sends frames at a steady rate, listens to its own results
(a native receiver on this machine) and shows a live line: fps sent and received, frames dropped, latency."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from twinfer.client import Client
from twinfer.client.streams import StreamSender, target
from twinfer.errors import ConfigError
from twinfer.protocol import game_pb2


def open_source(spec: str, fps: float, size: int = 256) -> Iterator[tuple[np.ndarray, dict[str, float] | None]]:
    """(frame, driving values) pairs: frames are uint8 GRAY (H,W) or RGB (H,W,3) from synthetic | video:FILE |
    camera:N; driving values are the blendshapes a synthetic face was rendered with (None for real sources)."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from twinfer.sources.synthetic_face import synthetic_frames

        return synthetic_frames(fps, size=size)
    if kind in ("video", "camera"):
        try:
            import cv2
        except ImportError:
            raise ConfigError(f"--source {spec}: needs OpenCV (pip install opencv-python-headless)") from None
        capture = cv2.VideoCapture(int(arg) if kind == "camera" else arg)
        if not capture.isOpened():
            raise ConfigError(f"--source {spec}: cannot open it")

        def frames() -> Iterator[np.ndarray]:
            while True:
                ok, image = capture.read()
                if not ok:
                    if kind == "video":
                        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the file
                        continue
                    return
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB), None

        return frames()
    raise ConfigError(f"--source {spec!r}: expected synthetic, video:FILE or camera:N")


class _Recorder:
    """JSON lines of what was sent, for `twinfer receive --compare` (or any tool): seq, t (wall clock), values."""

    def __init__(self, path: Path | None) -> None:
        self.file = open(path, "w", encoding="utf-8") if path is not None else None  # noqa: SIM115

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
    lock: threading.Lock = field(default_factory=threading.Lock)


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
            tally.received += 1
            tally.latencies_ms.append((time.time_ns() - result.capture_time_ns) / 1e6)


def run_capture(server: str, model: str, source: str, fps: float, seconds: float, receivers: list[tuple[str, str]],
                token: str | None = None, smoothing: bool = False, out=sys.stdout, record: Path | None = None,
                size: int = 256) -> int:
    """Stream `source` to `model`; with `record`, write one JSON line per frame sent (sequence number, wall-clock
    send time, the synthetic face's driving values) so what receivers got can be compared with what was sent."""
    host, _, port = server.rpartition(":")
    frames = open_source(source, fps, size)
    first, driving = next(frames)
    height, width = first.shape[:2]
    pixel_format = "RGB8" if first.ndim == 3 else "GRAY8"
    with Client(host, int(port), token=token, client_name="twinfer-stream") as client:
        local_host = client._sock.getsockname()[0]
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((local_host, 0))
        targets = [target(kind, address) for kind, address in receivers]
        targets.append(target("native", f"{local_host}:{listener.getsockname()[1]}"))
        tally, stop = _Tally(), threading.Event()
        thread = threading.Thread(target=_listen, args=(listener, tally, stop), daemon=True)
        thread.start()
        with StreamSender(client, model, width, height, pixel_format, targets, smoothing) as sender, \
                _Recorder(record) as recorder:
            print(f"stream {sender.stream_id}: {width}x{height} {pixel_format} at {fps:g} fps -> {model}, "
                  f"{len(targets) - 1} receiver(s)", file=out)
            start = time.monotonic()
            next_report, last_sent, last_received, image = start + 1, 0, 0, first
            while (now := time.monotonic()) < start + seconds:
                due = start + tally.sent / fps
                if now < due:
                    time.sleep(min(due - now, 0.05))
                    continue
                recorder.write(tally.sent, driving)
                sender.send_frame(image)
                tally.sent += 1
                image, driving = next(frames)
                if now >= next_report:
                    with tally.lock:
                        recent = tally.latencies_ms[-int(fps) :] or [float("nan")]
                        received = tally.received
                    print(f"sent {tally.sent - last_sent:4d} fps | received {received - last_received:4d} fps | "
                          f"dropped {max(tally.sent - received, 0):5d} | latency p50 "
                          f"{np.percentile(recent, 50):6.2f} ms p99 {np.percentile(recent, 99):6.2f} ms", file=out)
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
