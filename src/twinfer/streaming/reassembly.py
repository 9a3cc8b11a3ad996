"""Per-stream sequence window and fragment reassembly: bounded memory, replays refused.

A sequence number is accepted once. Anything at or below `highest - window` is too old (a replay or a frame so
late it is useless in real time); inside the window, a number already completed is a replay. At most
`max_partial` frames are being reassembled at a time; starting another evicts the oldest, counted as incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twinfer.streaming.datagram import Datagram, DatagramError


@dataclass(slots=True)
class _Partial:
    count: int
    capture_time_ns: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class FrameAssembler:
    def __init__(self, window: int = 64, max_partial: int = 4, max_frame_bytes: int = 16 * 1024 * 1024) -> None:
        self.window = window
        self.max_partial = max_partial
        self.max_frame_bytes = max_frame_bytes
        self.highest = -1
        self._seen: set[int] = set()  # completed sequence numbers inside the window
        self._partial: dict[int, _Partial] = {}
        self.incomplete = 0  # frames evicted before all their fragments arrived

    def _check_fresh(self, sequence: int) -> None:
        if self.highest >= 0 and sequence <= self.highest - self.window:
            raise DatagramError("replayed", f"sequence {sequence} is outside the window (highest {self.highest})")
        if sequence in self._seen:
            raise DatagramError("replayed", f"sequence {sequence} was already accepted")

    def _accept(self, sequence: int) -> None:
        self._seen.add(sequence)
        if sequence > self.highest:
            self.highest = sequence
            floor = self.highest - self.window
            if len(self._seen) > 2 * self.window:
                self._seen = {s for s in self._seen if s > floor}
            for stale in [s for s in self._partial if s <= floor]:
                del self._partial[stale]
                self.incomplete += 1

    def heartbeat(self, d: Datagram) -> None:
        self._check_fresh(d.sequence)
        self._accept(d.sequence)

    def add(self, d: Datagram) -> tuple[int, int, bytes] | None:
        """A fragment in; (sequence, capture time, whole frame) out once the frame is complete."""
        self._check_fresh(d.sequence)
        if d.fragment_count == 1:
            self._accept(d.sequence)
            return d.sequence, d.capture_time_ns, d.payload
        partial = self._partial.get(d.sequence)
        if partial is None:
            if len(self._partial) >= self.max_partial:
                del self._partial[min(self._partial)]
                self.incomplete += 1
            partial = self._partial[d.sequence] = _Partial(d.fragment_count, d.capture_time_ns)
        elif partial.count != d.fragment_count:
            raise DatagramError("malformed", f"sequence {d.sequence}: fragment counts disagree")
        if d.fragment_index in partial.parts:
            raise DatagramError("replayed", f"sequence {d.sequence}: fragment {d.fragment_index} twice")
        partial.size += len(d.payload)
        if partial.size > self.max_frame_bytes:
            del self._partial[d.sequence]
            raise DatagramError("oversized", f"sequence {d.sequence}: frame larger than {self.max_frame_bytes}")
        partial.parts[d.fragment_index] = d.payload
        if len(partial.parts) < partial.count:
            return None
        del self._partial[d.sequence]
        self._accept(d.sequence)
        return d.sequence, partial.capture_time_ns, b"".join(partial.parts[i] for i in range(partial.count))
