"""Stream counters and the frame-in -> datagram-out latency histogram (fixed buckets, cheap to update)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.001, 0.002, 0.004, 0.008, 0.0167, 0.033, 0.066, 0.1, 0.25)


@dataclass(slots=True)
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0
    samples: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total_s += seconds
        self.samples += 1

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s observations: a closed stream's latencies stay in the aggregate (Prometheus reads a
        histogram that shrinks as a counter reset)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.total_s += other.total_s
        self.samples += other.samples


@dataclass(slots=True)
class StreamStats:
    frames_in: int = 0  # complete, authentic frames received
    frames_out: int = 0  # frames whose results were sent
    frames_skipped: int = 0  # replaced by a newer frame before they ran (latest frame wins)
    frames_failed: int = 0  # preprocessing or inference failed
    datagrams_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # datagrams dropped, by reason
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
