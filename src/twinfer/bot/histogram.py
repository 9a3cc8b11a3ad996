"""Latency histograms: HDR (hdrhistogram), microsecond resolution, 3 significant digits, mergeable exactly
across worker processes through their compressed encoding."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

MAX_US = 3_600_000_000  # one hour
DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


class Latency:
    def __init__(self) -> None:
        self.h = HdrHistogram(1, MAX_US, DIGITS)

    def record_s(self, seconds: float) -> None:
        self.h.record_value(min(max(int(seconds * 1e6), 1), MAX_US))

    @property
    def count(self) -> int:
        return self.h.get_total_count()

    def encode(self) -> bytes:
        return self.h.encode()

    def add_encoded(self, encoded: bytes) -> None:
        self.h.decode_and_add(encoded)

    def add(self, other: Latency) -> None:
        self.h.add(other.h)

    def summary_ms(self) -> dict[str, float]:
        if not self.count:
            return {**{f"p{p:g}": 0.0 for p in PERCENTILES}, "mean": 0.0, "max": 0.0, "min": 0.0}
        out = {f"p{p:g}": self.h.get_value_at_percentile(p) / 1e3 for p in PERCENTILES}
        out.update(mean=self.h.get_mean_value() / 1e3, max=self.h.get_max_value() / 1e3,
                   min=self.h.get_min_value() / 1e3)
        return out

    def percentile_ms(self, p: float) -> float:
        return self.h.get_value_at_percentile(p) / 1e3 if self.count else 0.0
