"""Metrics that python models define (Triton's `pb_utils.MetricFamily`), exported on /metrics with twinfer's own.

Models update them from their instance threads, so every metric has its own lock; /metrics reads them at scrape
time through `CustomMetricsCollector`. Families are process-wide and keyed by name, as in Triton: two models that
create the same family (same kind) share it, and a metric with the same labels is the same metric. A counter is
exported under the name the model gave it, as Triton does (`requests_process_latency_ns`, not `..._total`), so the
dashboards and clients written for Triton find it; `bare_counter_names` lists them for the exposition, which has to
undo prometheus_client's renaming (twinfer.metrics.render).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

from prometheus_client.core import Metric as PrometheusMetric

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


class CustomMetric:
    def __init__(self, family: CustomMetricFamily, labels: dict[str, str],
                 buckets: Sequence[float] | None) -> None:
        self.family = family
        self.labels = labels
        self._lock = threading.Lock()
        self._value = 0.0
        self._buckets = tuple(sorted(float(b) for b in buckets)) if buckets else ()
        self._counts = [0] * len(self._buckets)
        self._count = 0

    def increment(self, value: float) -> None:
        if self.family.kind == HISTOGRAM:
            raise ValueError("a histogram metric is updated with observe()")
        if self.family.kind == COUNTER and value < 0:
            raise ValueError("a counter cannot be decremented")
        with self._lock:
            self._value += value

    def set(self, value: float) -> None:
        if self.family.kind != GAUGE:
            raise ValueError(f"set() is for gauges, not a {self.family.kind}")
        with self._lock:
            self._value = float(value)

    def observe(self, value: float) -> None:
        if self.family.kind != HISTOGRAM:
            raise ValueError(f"observe() is for histograms, not a {self.family.kind}")
        with self._lock:
            self._value += value
            self._count += 1
            for i, bound in enumerate(self._buckets):
                if value <= bound:
                    self._counts[i] += 1

    def value(self) -> float:
        if self.family.kind == HISTOGRAM:
            raise ValueError("a histogram has no single value")
        with self._lock:
            return self._value

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        name = self.family.name
        with self._lock:
            if self.family.kind in (COUNTER, GAUGE):
                return [(name, self.labels, self._value)]
            out = [(f"{name}_bucket", {**self.labels, "le": repr(b) if math.isfinite(b) else "+Inf"}, float(c))
                   for b, c in zip(self._buckets, self._counts)]
            out.append((f"{name}_bucket", {**self.labels, "le": "+Inf"}, float(self._count)))
            out.append((f"{name}_count", self.labels, float(self._count)))
            out.append((f"{name}_sum", self.labels, self._value))
            return out


class CustomMetricFamily:
    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self._lock = threading.Lock()
        self._metrics: dict[tuple[tuple[str, str], ...], CustomMetric] = {}

    def metric(self, labels: dict[str, str] | None, buckets: Sequence[float] | None) -> CustomMetric:
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        key = tuple(sorted(labels.items()))
        if self.kind == HISTOGRAM and not buckets:
            raise ValueError(f"histogram {self.name!r} needs buckets")
        with self._lock:
            metric = self._metrics.get(key)
            if metric is None:
                metric = self._metrics[key] = CustomMetric(self, labels, buckets)
            return metric

    def forget(self, metric: CustomMetric) -> None:
        with self._lock:
            self._metrics.pop(tuple(sorted(metric.labels.items())), None)

    def metrics(self) -> list[CustomMetric]:
        with self._lock:
            return list(self._metrics.values())


_families: dict[str, CustomMetricFamily] = {}
_families_lock = threading.Lock()


def family(name: str, description: str, kind: str) -> CustomMetricFamily:
    """The process-wide family of that name (created on first use); a second kind for one name is refused."""
    if kind not in (COUNTER, GAUGE, HISTOGRAM):
        raise ValueError(f"unknown metric kind {kind!r}")
    if not name or not (name[0].isalpha() or name[0] in "_:") or not all(c.isalnum() or c in "_:" for c in name):
        raise ValueError(f"{name!r} is not a valid metric name")
    if name.startswith("twinfer_"):
        raise ValueError(f"{name!r}: the twinfer_ prefix is the server's own")
    with _families_lock:
        existing = _families.get(name)
        if existing is None:
            existing = _families[name] = CustomMetricFamily(name, description, kind)
        elif existing.kind != kind:
            raise ValueError(f"metric family {name!r} already exists as a {existing.kind}")
        return existing


def bare_counter_names() -> set[str]:
    """The counter families whose name does not end in `_total` (exported bare, as in Triton)."""
    with _families_lock:
        return {f.name for f in _families.values() if f.kind == COUNTER and not f.name.endswith("_total")}


class CustomMetricsCollector:
    """prometheus_client collector over every family the python models created."""

    def collect(self) -> Iterator[PrometheusMetric]:
        with _families_lock:
            families = list(_families.values())
        for fam in families:
            # prometheus_client writes a counter family as `<name>_total`: give it the name without that suffix
            bare = fam.kind == COUNTER and fam.name.endswith("_total")
            out = PrometheusMetric(fam.name[:-len("_total")] if bare else fam.name, fam.description, fam.kind)
            for metric in fam.metrics():
                for sample_name, labels, value in metric.samples():
                    out.add_sample(sample_name, labels, value)
            if out.samples:
                yield out
