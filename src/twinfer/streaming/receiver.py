"""`twinfer receive --vmc PORT`: a VMC receiver for people without Unity, printing what arrives (frames per second,
tracking status, calibration, the head pose from the `Head` bone, the strongest shapes); `--record` keeps every
frame (JSON lines), `--compare SENT.jsonl` says how well the values follow what `twinfer stream --record` sent
(per-shape correlation).

Like Unity receivers it keeps one name -> value table that every `/VMC/Ext/Blend/Val` updates. twinfer sends a
frame as several bundles, each with its own `/VMC/Ext/T` and Apply (see outputs/vmc.py), so a frame here is
everything that arrived with one T: a new T closes the previous frame. From a sender that sends no T, each Apply
is a frame.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from twinfer.errors import ConfigError
from twinfer.streaming.outputs.unity_pose import unity_to_arkit_angles

VMC_CALIBRATION = {0: "not calibrated", 1: "waiting", 2: "calibrating", 3: "calibrated"}


@dataclass
class VmcState:
    """What a VMC receiver knows. Datagrams are handled one at a time, in arrival order (python-osc's blocking
    server, on its own thread); `lock` guards what the printing thread reads."""

    keep: bool = False
    frames: int = 0
    values: dict[str, float] = field(default_factory=dict)
    bones: dict[str, tuple[float, ...]] = field(default_factory=dict)
    status: tuple[int, ...] = ()
    frame_time: float | None = None
    last_arrival: float = 0.0
    received: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (arrival, values) per frame
    _pending_status: tuple[int, ...] = ()
    _stale: bool = False
    _seen_time: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def dispatcher(self) -> Dispatcher:
        dispatcher = Dispatcher()
        dispatcher.map("/VMC/Ext/OK", self._ok)
        dispatcher.map("/VMC/Ext/T", self._time)
        dispatcher.map("/VMC/Ext/Bone/Pos", self._bone)
        dispatcher.map("/VMC/Ext/Blend/Val", self._value)
        dispatcher.map("/VMC/Ext/Blend/Apply", self._apply)
        return dispatcher

    def _ok(self, _: str, *args: int) -> None:
        with self.lock:
            self._pending_status = tuple(args)  # OK comes before T: it counts once T says whose frame it is

    def _time(self, _: str, seconds: float) -> None:
        with self.lock:
            # a later T opens a new frame, a jump back of more than a second is a new stream; a late bundle of an
            # earlier frame is ignored (its values and status are older than what we hold)
            self._seen_time = True
            current = self.frame_time
            self._stale = current is not None and current - 1.0 <= seconds < current
            if current is None or seconds > current or seconds < current - 1.0:
                self._close_frame()
                self.frame_time = seconds
            if not self._stale and self._pending_status:
                self.status = self._pending_status

    def _bone(self, _: str, name: str, *pose: float) -> None:
        with self.lock:
            if not self._stale:
                self.bones[name] = tuple(pose)

    def _value(self, _: str, name: str, value: float) -> None:
        with self.lock:
            if not self._stale:
                self.values[name] = value

    def _apply(self, _: str) -> None:
        with self.lock:
            self.last_arrival = time.time()
            if self.frame_time is None and not self._seen_time:  # a sender without T: one Apply, one frame
                self.frames += 1
                if self.keep:
                    self.received.append((self.last_arrival, dict(self.values)))

    def _close_frame(self) -> None:
        if self.frame_time is None:
            return
        self.frames += 1
        if self.keep:
            self.received.append((self.last_arrival, dict(self.values)))

    def finish(self) -> None:
        with self.lock:
            self._close_frame()
            self.frame_time = None


def describe(state: VmcState, top: int) -> str:
    """`tracked, calibrated | head yaw +10 pitch -2 roll +0 deg | 52 shapes | jawOpen 0.61 ...` (under the lock)."""
    parts = []
    if state.status:
        tracked = "tracked" if len(state.status) > 3 and state.status[3] == 1 else "lost"
        calibration = VMC_CALIBRATION.get(state.status[1], "?") if len(state.status) > 1 else "?"
        parts.append(f"{tracked}, {calibration}")
    head = state.bones.get("Head")
    if head is not None and len(head) >= 7:
        yaw, pitch, roll = (math.degrees(a) for a in unity_to_arkit_angles(head[3:7]))  # type: ignore[arg-type]
        parts.append(f"head yaw {yaw:+4.0f} pitch {pitch:+4.0f} roll {roll:+4.0f} deg")
    strongest = sorted(state.values.items(), key=lambda kv: -kv[1])[:top]
    shown = "  ".join(f"{name} {v:.2f}" for name, v in strongest) or "(nothing yet)"
    parts.append(f"{len(state.values)} shapes | {shown}")
    return " | ".join(parts)


def run_vmc_receiver(host: str, port: int, seconds: float | None = None, top: int = 6, out=sys.stdout,
                     record: Path | None = None, compare: Path | None = None) -> int:
    state = VmcState(keep=record is not None or compare is not None)
    try:
        server = BlockingOSCUDPServer((host, port), state.dispatcher())
    except OSError as exc:
        raise ConfigError(f"receive: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"listening for VMC on {host}:{server.server_address[1]} (Ctrl-C to stop)", file=out, flush=True)
    start = last = time.monotonic()
    seen = 0
    try:
        while seconds is None or time.monotonic() - start < seconds:
            time.sleep(1.0)
            now = time.monotonic()
            with state.lock:
                frames, line = state.frames, describe(state, top)
            print(f"{(frames - seen) / (now - last):5.1f} fps | {line}", file=out, flush=True)
            seen, last = frames, now
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    state.finish()
    if record is not None:
        with open(record, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"t": arrived, "values": values}) + "\n" for arrived, values in state.received)
    if compare is not None:
        from twinfer.streaming.tracking_check import correlations, format_report, read_sent

        print(format_report(correlations(read_sent(compare), state.received)), file=out, flush=True)
    return 0
