"""From merged measurements to the summary: totals, percentiles, a per-second timeline, open-model achieved vs
scheduled rate, thresholds, and what each test type is about (knee, recovery, drift, failover, hangs)."""

from __future__ import annotations

from typing import Any

from twinfer.bot.histogram import Latency
from twinfer.bot.recorder import Merged
from twinfer.bot.scenario import Scenario
from twinfer.bot.thresholds import parse_threshold
from twinfer.bot.worker import rate_function


def _window(merged: Merged, first: int, last: int) -> dict[str, Any]:
    """Stats of seconds [first, last)."""
    h = Latency()
    ok = failed = 0
    for second in range(first, last):
        if second in merged.per_second:
            h.add(merged.per_second[second])
        ok += merged.ok.get(second, 0)
        failed += merged.failed.get(second, 0)
    seconds = max(last - first, 1)
    total = ok + failed
    return {"rps": ok / seconds, "error_rate": failed / total if total else 0.0, "latency_ms": h.summary_ms(),
            "requests": total}


# Percentiles of the HDR plot: 1 - p spaced evenly on a log scale from 50 % to 99.99 %.
DISTRIBUTION = (0, 25, 50, 75, 80, 90, 95, 97, 98, 99, 99.5, 99.7, 99.8, 99.9, 99.95, 99.97, 99.98, 99.99)


def percentile_distribution(total: Latency) -> list[list[float]]:
    """[(percentile, ms)] for the report's HDR percentile plot, plus the maximum as 100."""
    if not total.count:
        return []
    return [[p, total.percentile_ms(p or 0.0001)] for p in DISTRIBUTION] + [[100.0, total.summary_ms()["max"]]]


def _second(merged: Merged, sec: int, open_model: bool) -> dict[str, Any]:
    h = merged.per_second.get(sec)
    return {"second": sec, "ok": merged.ok.get(sec, 0), "failed": merged.failed.get(sec, 0),
            "p50_ms": h.percentile_ms(50) if h else None, "p90_ms": h.percentile_ms(90) if h else None,
            "p99_ms": h.percentile_ms(99) if h else None, "max_ms": h.percentile_ms(100) if h else None,
            "scheduled": merged.scheduled_at.get(sec, 0) if open_model else None,
            "users": None if open_model else merged.users_at.get(sec),
            "in_flight": merged.in_flight_at.get(sec),
            "errors": dict(merged.errors_at.get(sec, {}))}


def summarize(s: Scenario, merged: Merged, rss: list[tuple[float, float]], failover: dict[str, Any],
              missing_workers: int = 0) -> dict[str, Any]:
    ok, failed = sum(merged.ok.values()), sum(merged.failed.values())
    total = ok + failed
    last_second = max([*merged.ok, *merged.failed], default=-1) + 1
    # A stress run stopped early, or a concurrency run, lasts as long as its data does.
    duration = min(s.duration, last_second) if s.test != "concurrency" else max(last_second, 1)
    duration = max(duration, 1e-9)
    summary: dict[str, Any] = {
        "test": s.test, "protocol": s.protocol, "target": s.target, "model": s.model, "processes": s.processes,
        "mode": "open" if s.open_model else "closed", "users": None if s.open_model else s.users,
        "duration_s": duration, "requests": total, "ok": ok, "failed": failed,
        "error_rate": failed / total if total else 0.0, "rps": ok / duration if duration else 0.0,
        "latency_ms": merged.total.summary_ms(), "errors": dict(merged.errors.most_common()),
        "reconnects": merged.reconnects, "events": sorted(merged.events),
        "timeline": [_second(merged, sec, s.open_model) for sec in range(last_second)],
        "percentile_distribution": percentile_distribution(merged.total),
    }
    if s.open_model:
        scheduled_rate = merged.scheduled / duration
        summary["open_model"] = {"scheduled": merged.scheduled, "sent": merged.sent,
                                 "scheduled_rate": scheduled_rate, "achieved_rate": summary["rps"]}
    thresholds = [parse_threshold(t) for t in s.thresholds]
    checks = []
    for t in thresholds:
        passed, actual = t.check(summary)
        checks.append({"threshold": t.text, "actual": actual, "ok": passed})
    summary["thresholds"] = checks
    passed = all(c["ok"] for c in checks) and missing_workers == 0 and ok > 0
    if s.test == "stress":
        summary["stress"] = _stress(s, merged, thresholds)
        # A stress run is meant to break its thresholds; it passes when it found a rate that met them.
        passed = summary["stress"]["knee_rate"] is not None and missing_workers == 0
    elif s.test == "spike":
        summary["spike"] = _spike(s, merged)
    elif s.test == "soak":
        summary["soak"] = _soak(s, merged, rss)
    elif s.test == "failover":
        summary["failover"] = _failover(merged, failover, last_second)
    elif s.test == "concurrency":
        hung = sum(v for k, v in merged.errors.items() if "timeout" in k)
        summary["concurrency"] = {"hung": hung}
        passed = passed and hung == 0 and total > 0
    summary["passed"] = passed
    return summary


def _stress(s: Scenario, merged: Merged, thresholds: list) -> dict[str, Any]:
    """Each rate step judged on its own window; the knee is the highest step that met every threshold."""
    rate = rate_function(s)
    steps, knee, t = [], None, 0.0
    while t < s.duration:
        first, last = int(t), int(min(t + s.stress.step, s.duration))
        if last <= first:
            break
        window = _window(merged, first + 1 if last - first > 1 else first, last)  # skip each step's first second
        target = rate(t)
        met = all(th.check(window)[0] for th in thresholds) and window["rps"] >= 0.9 * target
        steps.append({"rate": target, "achieved_rps": window["rps"], "p99_ms": window["latency_ms"]["p99"],
                      "error_rate": window["error_rate"], "met": met})
        if met and (knee is None or target > knee):
            knee = target
        if not met:
            break
        t += s.stress.step
    broke = bool(steps) and not steps[-1]["met"]
    note = "" if broke else "no threshold broke within the duration: raise duration or stress.max_rate"
    return {"knee_rate": knee, "steps": steps, "broke": broke, "note": note}


def _spike(s: Scenario, merged: Merged) -> dict[str, Any]:
    at, length = s.spike.at * s.duration, s.spike.length * s.duration
    base = _window(merged, 1 if int(at) >= 2 else 0, max(int(at), 1))  # skip the first second when there is room
    during = _window(merged, int(at), int(at + length))
    limit = max(base["latency_ms"]["p99"] * 1.5, 1.0)
    recovered = None
    for second in range(int(at + length), int(s.duration)):
        w = _window(merged, second, second + 1)
        if w["requests"] and w["latency_ms"]["p99"] <= limit and w["error_rate"] == 0:
            recovered = second + 1 - (at + length)
            break
    return {"baseline_p99_ms": base["latency_ms"]["p99"], "spike_p99_ms": during["latency_ms"]["p99"],
            "spike_error_rate": during["error_rate"], "recovery_s": recovered}


def _soak(s: Scenario, merged: Merged, rss: list[tuple[float, float]]) -> dict[str, Any]:
    fifth = max(int(s.duration / 5), 1)
    first, last = _window(merged, 0, fifth), _window(merged, int(s.duration) - fifth, int(s.duration))
    return {"p99_first_ms": first["latency_ms"]["p99"], "p99_last_ms": last["latency_ms"]["p99"],
            "p99_drift_ms": last["latency_ms"]["p99"] - first["latency_ms"]["p99"],
            "rss_mb": rss, "rss_drift_mb": (rss[-1][1] - rss[0][1]) if len(rss) >= 2 else None}


def _failover(merged: Merged, failover: dict[str, Any], last_second: int) -> dict[str, Any]:
    at = failover.get("command_at_s")
    if at is None:
        return {"command_at_s": None, "note": "no failover command ran"}
    failed_after = merged.last_error_at is not None and merged.last_error_at >= at
    recovered = None if merged.unrecovered else merged.recovered_at
    return {**failover,
            "first_error_s": merged.first_error_at if failed_after else None,
            "last_error_s": merged.last_error_at if failed_after else None,
            "recovered_at_s": recovered if failed_after else None,
            "recovery_s": (round(recovered - at, 3) if recovered is not None else None) if failed_after else 0.0,
            "lost": sum(merged.failed.get(sec, 0) for sec in range(int(at), last_second)),
            "reconnects": merged.reconnects}
