"""An independent VMC receiver for e2e tests: a UDP socket and python-osc's bundle parser, no twinfer code.

It does what Unity receivers do (one name -> value table updated by every /VMC/Ext/Blend/Val) and tells frames
apart by /VMC/Ext/T, which twinfer repeats in every bundle of a frame. Each frame keeps the table after it, the
shapes that arrived fresh in it, its last OK status and bones, and the arrival time of its last bundle; every
datagram's size and whether it ended with Apply are kept too.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage


@dataclass
class VmcFrame:
    t: float
    arrived: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)
    status: list[int] = field(default_factory=list)
    bones: dict[str, list[float]] = field(default_factory=dict)


class VmcReceiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.sizes: list[int] = []
        self.ends_with_apply: list[bool] = []
        self.closed_frames: list[VmcFrame] = []
        self._table: dict[str, float] = {}
        self._current: VmcFrame | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def frames(self) -> list[VmcFrame]:
        """Closed frames, plus the one in progress."""
        with self._lock:
            return self.closed_frames + ([self._current] if self._current is not None else [])

    def timed_frames(self) -> list[tuple[float, dict[str, float]]]:
        """(arrival, values) per frame, as twinfer.streaming.tracking_check.correlations takes them."""
        return [(f.arrived, f.values) for f in self.frames]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            messages = [m for m in OscBundle(data) if isinstance(m, OscMessage)]
            with self._lock:
                self.sizes.append(len(data))
                self.ends_with_apply.append(bool(messages) and messages[-1].address == "/VMC/Ext/Blend/Apply")
                status: list[int] = []
                for m in messages:
                    if m.address == "/VMC/Ext/OK":
                        status = list(m.params)
                    elif m.address == "/VMC/Ext/T":
                        t = m.params[0]
                        if self._current is not None and t < self._current.t:
                            break  # a late bundle of an earlier frame: older than what the table holds
                        if self._current is None or t > self._current.t:
                            if self._current is not None:
                                self.closed_frames.append(self._current)
                            self._current = VmcFrame(t)
                        self._current.status = status
                    elif self._current is None:
                        continue
                    elif m.address == "/VMC/Ext/Blend/Val":
                        self._table[m.params[0]] = m.params[1]
                        self._current.fresh.add(m.params[0])
                    elif m.address == "/VMC/Ext/Bone/Pos":
                        self._current.bones[m.params[0]] = list(m.params[1:])
                    elif m.address == "/VMC/Ext/Blend/Apply":
                        self._current.values = dict(self._table)
                        self._current.arrived = time.time()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
