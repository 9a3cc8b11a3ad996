"""Per-stream sequence window and fragment reassembly: bounded memory, replays refused.

A sequence number is accepted once. Anything at or below `highest - window` is too old (a replay or a frame so
late it is useless in real time); inside the window, a number already completed is a replay. At most
`max_partial` frames are being reassembled at a time; starting another evicts the oldest, counted as incomplete.

Memory has a bound per frame (the stream's real frame size), per stream (`max_partial` frames) and per process:
every assembler draws on one `PartialFrameBudget`, which evicts the oldest partial frames of any stream once the
bytes held pass its limit, and drops every partial frame older than the frame deadline. Heartbeats keep a stream
open but never a partial frame: a frame that has not completed within the deadline will not be useful.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from twinfer.streaming.datagram import Datagram, DatagramError

DROP_INCOMPLETE = "incomplete"  # evicted by a newer partial frame of the same stream, or left behind the window
DROP_BUDGET = "partial_budget"  # evicted to keep the process under max_partial_frame_bytes
DROP_DEADLINE = "frame_deadline"  # not complete within frame_deadline_s of its first fragment


@dataclass(slots=True)
class _Partial:
    count: int
    capture_time_ns: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class PartialFrameBudget:
    """Bytes held in partial frames across every stream of a process, oldest first. One per StreamManager.

    `max_bytes` caps the total; `deadline_s` caps the age of a partial frame (by the injected clock's time, passed
    in as `now`). Both evict from the oldest end, which is why partial frames are kept in start order.
    """

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, deadline_s: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.deadline_s = deadline_s
        self.held = 0
        self._order: OrderedDict[tuple[int, int], tuple[FrameAssembler, _Partial]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def started(self, assembler: FrameAssembler, sequence: int, partial: _Partial) -> None:
        self._order[(id(assembler), sequence)] = (assembler, partial)

    def grew(self, nbytes: int) -> None:
        self.held += nbytes
        while self.held > self.max_bytes and self._order:
            (_, sequence), (assembler, _) = next(iter(self._order.items()))
            assembler.drop(sequence, DROP_BUDGET)

    def forget(self, assembler: FrameAssembler, sequence: int, partial: _Partial) -> None:
        if self._order.pop((id(assembler), sequence), None) is not None:
            self.held -= partial.size

    def expire(self, now: float) -> None:
        """Drop every partial frame that started more than deadline_s before `now`."""
        horizon = now - self.deadline_s
        while self._order:
            (_, sequence), (assembler, partial) = next(iter(self._order.items()))
            if partial.started >= horizon:
                return
            assembler.drop(sequence, DROP_DEADLINE)


class FrameAssembler:
    def __init__(self, window: int = 64, max_partial: int = 4, max_frame_bytes: int = 16 * 1024 * 1024,
                 budget: PartialFrameBudget | None = None, dropped: Counter[str] | None = None) -> None:
        self.window = window
        self.max_partial = max_partial
        self.max_frame_bytes = max_frame_bytes
        self.budget = budget if budget is not None else PartialFrameBudget()
        self.dropped: Counter[str] = dropped if dropped is not None else Counter()  # partial frames, by reason
        self.highest = -1
        self._seen: set[int] = set()  # completed sequence numbers inside the window
        self._partial: dict[int, _Partial] = {}

    @property
    def incomplete(self) -> int:
        """Frames evicted before all their fragments arrived, for any reason."""
        return sum(self.dropped[r] for r in (DROP_INCOMPLETE, DROP_BUDGET, DROP_DEADLINE))

    @property
    def held_bytes(self) -> int:
        return sum(p.size for p in self._partial.values())

    def drop(self, sequence: int, reason: str) -> None:
        """Give up on a partial frame, counted under `reason`."""
        if self._release(sequence) is not None:
            self.dropped[reason] += 1

    def _release(self, sequence: int) -> _Partial | None:
        partial = self._partial.pop(sequence, None)
        if partial is not None:
            self.budget.forget(self, sequence, partial)
        return partial

    def close(self) -> None:
        """The stream closed: give its bytes back to the budget (not counted as drops)."""
        for sequence, partial in list(self._partial.items()):
            self.budget.forget(self, sequence, partial)
        self._partial.clear()

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
                self.drop(stale, DROP_INCOMPLETE)

    def heartbeat(self, d: Datagram, now: float = 0.0) -> None:
        self.budget.expire(now)
        self._check_fresh(d.sequence)
        self._accept(d.sequence)

    def add(self, d: Datagram, now: float = 0.0) -> tuple[int, int, bytes] | None:
        """A fragment in; (sequence, capture time, whole frame) out once the frame is complete."""
        self.budget.expire(now)
        self._check_fresh(d.sequence)
        if d.fragment_count == 1:
            if len(d.payload) > self.max_frame_bytes:
                raise DatagramError("oversized", f"sequence {d.sequence}: frame larger than {self.max_frame_bytes}")
            self._accept(d.sequence)
            return d.sequence, d.capture_time_ns, d.payload
        partial = self._partial.get(d.sequence)
        if partial is None:
            if len(self._partial) >= self.max_partial:
                self.drop(min(self._partial), DROP_INCOMPLETE)
            partial = self._partial[d.sequence] = _Partial(d.fragment_count, d.capture_time_ns, now)
            self.budget.started(self, d.sequence, partial)
        elif partial.count != d.fragment_count:
            raise DatagramError("malformed", f"sequence {d.sequence}: fragment counts disagree")
        if d.fragment_index in partial.parts:
            raise DatagramError("replayed", f"sequence {d.sequence}: fragment {d.fragment_index} twice")
        if partial.size + len(d.payload) > self.max_frame_bytes:
            self._release(d.sequence)  # counted by the caller, as the datagram's drop reason
            raise DatagramError("oversized", f"sequence {d.sequence}: frame larger than {self.max_frame_bytes}")
        partial.parts[d.fragment_index] = d.payload
        partial.size += len(d.payload)
        self.budget.grew(len(d.payload))
        if d.sequence not in self._partial:  # the budget evicted this very frame: it was the oldest
            return None
        if len(partial.parts) < partial.count:
            return None
        self._release(d.sequence)
        self._accept(d.sequence)
        return d.sequence, partial.capture_time_ns, b"".join(partial.parts[i] for i in range(partial.count))
