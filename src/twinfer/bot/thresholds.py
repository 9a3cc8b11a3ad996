"""Pass/fail thresholds: `p99<5ms`, `p50<=800us`, `mean<2ms`, `error_rate<0.1%`, `rps>1000`."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

from twinfer.errors import ConfigError

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_PATTERN = re.compile(
    r"\s*(?P<metric>[a-z0-9_.]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[0-9.]+)\s*(?P<unit>us|ms|s|%)?\s*"
)
_LATENCY = re.compile(r"(p\d+(\.\d+)?|mean|max|min)")
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}  # to milliseconds


@dataclass(frozen=True, slots=True)
class Threshold:
    text: str
    metric: str
    op: str
    value: float  # latency in ms, error_rate as a fraction, rps per second

    def check(self, summary: dict[str, Any]) -> tuple[bool, float]:
        actual = actual_value(self.metric, summary)
        return _OPS[self.op](actual, self.value), actual


def actual_value(metric: str, summary: dict[str, Any]) -> float:
    if metric == "error_rate":
        return float(summary["error_rate"])
    if metric == "rps":
        return float(summary["rps"])
    return float(summary["latency_ms"][metric])


def parse_threshold(text: str) -> Threshold:
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ConfigError(f"threshold {text!r}: expected METRIC<VALUE, e.g. p99<5ms, error_rate<0.1%, rps>1000")
    metric, op, value, unit = match["metric"], match["op"], float(match["value"]), match["unit"]
    if metric == "error_rate":
        if unit not in ("%", None):
            raise ConfigError(f"threshold {text!r}: error_rate takes a % or a fraction")
        value = value / 100 if unit == "%" else value
    elif metric == "rps":
        if unit is not None:
            raise ConfigError(f"threshold {text!r}: rps takes no unit")
    elif _LATENCY.fullmatch(metric):
        if unit in ("%", None):  # `p99<5` is 5 ms to some and 5 s to others: say which
            raise ConfigError(f"threshold {text!r}: a latency needs a unit, us, ms or s (e.g. {metric}{op}"
                              f"{match['value']}ms)")
        value *= _TIME_UNITS[unit]
        if metric.startswith("p") and not 0 < float(metric[1:]) <= 100:
            raise ConfigError(f"threshold {text!r}: percentile outside 0..100")
    else:
        raise ConfigError(f"threshold {text!r}: unknown metric {metric!r} (p50, p99, p99.9, mean, max, "
                          "error_rate, rps)")
    return Threshold(text.strip(), metric, op, value)


def latency_metrics(thresholds: list[Threshold]) -> set[str]:
    return {t.metric for t in thresholds if t.metric not in ("error_rate", "rps")}
