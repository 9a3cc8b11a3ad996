"""`pb_utils.MetricFamily` and `Metric`: Triton's custom metrics over twinfer.inference.custom_metrics."""

from __future__ import annotations

from typing import Any

from twinfer.backends.triton_errors import TritonModelException


class MetricFamily:
    """Triton's custom metrics: `MetricFamily(name, description, kind)`, then `.Metric(labels=..., buckets=...)`
    with `increment`, `set`, `observe`, `value`. Exported on the server's /metrics next to twinfer's own."""

    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
    _KINDS = {0: "counter", 1: "gauge", 2: "histogram"}

    def __init__(self, name: str, description: str, kind: int) -> None:
        from twinfer.inference import custom_metrics

        if kind not in self._KINDS:
            raise TritonModelException(f"unknown metric kind {kind!r}")
        try:
            self._family = custom_metrics.family(name, description, self._KINDS[kind])
        except ValueError as exc:
            raise TritonModelException(str(exc)) from None

    def Metric(self, labels: dict[str, str] | None = None, buckets: list[float] | None = None) -> Metric:  # noqa: N802
        try:
            return Metric(self._family.metric(labels, buckets))
        except ValueError as exc:
            raise TritonModelException(str(exc)) from None


class Metric:
    def __init__(self, metric: Any) -> None:
        self._metric = metric

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._metric, method)(*args)
        except ValueError as exc:
            raise TritonModelException(str(exc)) from None

    def increment(self, value: float) -> None:
        self._call("increment", value)

    def set(self, value: float) -> None:
        self._call("set", value)

    def observe(self, value: float) -> None:
        self._call("observe", value)

    def value(self) -> float:
        return self._call("value")
