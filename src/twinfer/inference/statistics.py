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
