"""Does what a receiver got follow what the capture side sent? Per-shape Pearson correlation between the driving
values `twinfer stream --record` wrote and the values a receiver recorded, matched by time.

A VMC frame carries no sequence number, so each received frame is matched with the last frame *sent* before it
arrived (send and receive clocks are the same wall clock on one machine, or NTP-close on a LAN). At stream rates
where the frame interval is much longer than the latency this matching is exact; at higher rates some frames
pair with their neighbour, which only lowers the correlation of fast-moving shapes a little.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Sent:
    t: float
    values: dict[str, float]


def read_sent(path: Path) -> list[Sent]:
    """The frames `twinfer stream --record` wrote that carry driving values (synthetic sources), in send order."""
    sent = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record.get("values"):
                sent.append(Sent(float(record["t"]), record["values"]))
    return sent


def correlations(sent: list[Sent], received: Iterable[tuple[float, dict[str, float]]]) -> dict[str, tuple[float, int]]:
    """shape -> (Pearson r, pairs) over every shape the sender drove and the receiver got; r is NaN when either
    side did not vary."""
    times = [s.t for s in sent]
    pairs: dict[str, list[tuple[float, float]]] = {}
    for arrived, values in received:
        i = bisect.bisect_right(times, arrived) - 1
        if i < 0:
            continue
        for name, driven in sent[i].values.items():
            if name in values:
                pairs.setdefault(name, []).append((driven, values[name]))
    result = {}
    for name, points in pairs.items():
        a = np.array(points, dtype=np.float64)
        if len(a) < 3 or a[:, 0].std() == 0 or a[:, 1].std() == 0:
            result[name] = (float("nan"), len(a))
        else:
            result[name] = (float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]), len(a))
    return result


def format_report(result: dict[str, tuple[float, int]]) -> str:
    lines = [f"{'shape':<18} {'r':>6} {'frames':>7}"]
    for name, (r, n) in sorted(result.items(), key=lambda item: -np.nan_to_num(item[1][0], nan=-2)):
        lines.append(f"{name:<18} {r:6.3f} {n:7d}")
    return "\n".join(lines)
