"""Per-model-version counters: what Triton's statistics extension and Prometheus report.

Updated only on the reactor thread (the batcher records results there), so no locks are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStats:
    """One batch size's executions and compute time."""

    count: int = 0
    compute_ns: int = 0


@dataclass(slots=True)
class ModelStatistics:
    success: Duration = field(default_factory=Duration)  # request count and end-to-end time
    failure: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)  # time from submit to batch start, per request
    compute: Duration = field(default_factory=Duration)  # batch execution time, counted per request
    inference_count: int = 0  # rows (batch elements) run
    execution_count: int = 0  # batches run
    last_inference_ms: int = 0  # wall clock, ms since the epoch
    batches: dict[int, BatchStats] = field(default_factory=dict)  # batch size in rows -> stats
    in_flight: int = 0

    def record_batch(self, rows: int, compute_ns: int, requests: int, now_ms: int) -> None:
        stats = self.batches.get(rows)
        if stats is None:
            stats = self.batches[rows] = BatchStats()
        stats.count += 1
        stats.compute_ns += compute_ns
        self.inference_count += rows
        self.execution_count += 1
        self.compute.add(compute_ns * requests, requests)
        self.last_inference_ms = now_ms

    def to_json(self) -> dict:
        """Plain JSON types, for a sibling worker (twinfer.server.worker_peers) to add to its own."""
        return {"success": [self.success.count, self.success.ns], "failure": [self.failure.count, self.failure.ns],
                "queue": [self.queue.count, self.queue.ns], "compute": [self.compute.count, self.compute.ns],
                "inference_count": self.inference_count, "execution_count": self.execution_count,
                "last_inference_ms": self.last_inference_ms, "in_flight": self.in_flight,
                "batches": [[rows, b.count, b.compute_ns] for rows, b in sorted(self.batches.items())]}

    def add(self, other: dict) -> None:
        """Add another worker's counters (as `to_json` wrote them) to these; the newest inference time wins."""
        for key in ("success", "failure", "queue", "compute"):
            count, ns = other[key]
            getattr(self, key).add(int(ns), int(count))
        self.inference_count += int(other["inference_count"])
        self.execution_count += int(other["execution_count"])
        self.in_flight += int(other["in_flight"])
        self.last_inference_ms = max(self.last_inference_ms, int(other["last_inference_ms"]))
        for rows, count, compute_ns in other["batches"]:
            stats = self.batches.get(int(rows))
            if stats is None:
                stats = self.batches[int(rows)] = BatchStats()
            stats.count += int(count)
            stats.compute_ns += int(compute_ns)

    def copy(self) -> ModelStatistics:
        merged = ModelStatistics()
        merged.add(self.to_json())
        return merged
