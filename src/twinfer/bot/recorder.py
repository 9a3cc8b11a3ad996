"""What one worker measured: an HDR histogram overall and per second, successes and errors per second, errors by
kind, and for open-model runs the scheduled vs sent counts. Serialisable, so a coordinator merges them exactly."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from typing import Any

from twinfer.bot.histogram import Latency


class Recorder:
    def __init__(self, start: float) -> None:
        self.start = start
        self.total = Latency()
        self.per_second: dict[int, Latency] = defaultdict(Latency)
        self.ok: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_at: dict[int, Counter[str]] = defaultdict(Counter)  # second -> error kind -> count
        self.scheduled_at: Counter[int] = Counter()  # open model: arrivals by intended second
        self.users_at: dict[int, int] = {}  # second -> active users (closed model), sampled once a second
        self.in_flight_at: dict[int, int] = {}  # second -> requests in flight, sampled once a second
        self.scheduled = 0
        self.sent = 0
        self.reconnects = 0
        self.events: list[tuple[float, str]] = []
        self.first_error_at: float | None = None  # seconds since start, exact (failover timing)
        self.last_error_at: float | None = None
        self.recovered_at: float | None = None  # first success after the last error

    def success(self, now: float, latency_s: float) -> None:
        if now - latency_s < self.start:
            return  # sent during the warm-up
        if self.last_error_at is not None and self.recovered_at is None:
            self.recovered_at = now - self.start
        second = int(now - self.start)
        self.total.record_s(latency_s)
        self.per_second[second].record_s(latency_s)
        self.ok[second] += 1

    def error(self, now: float, kind: str) -> None:
        at = now - self.start
        if at < 0:
            return  # during the warm-up
        if self.first_error_at is None:
            self.first_error_at = at
        self.last_error_at, self.recovered_at = at, None
        self.failed[int(at)] += 1
        self.errors[kind] += 1
        self.errors_at[int(at)][kind] += 1

    def sample(self, now: float, users: int, in_flight: int) -> None:
        second = int(now - self.start)
        if second >= 0:
            self.users_at[second] = max(users, self.users_at.get(second, 0))
            self.in_flight_at[second] = max(in_flight, self.in_flight_at.get(second, 0))

    def event(self, now: float, text: str) -> None:
        self.events.append((round(now - self.start, 3), text))

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": base64.b64encode(self.total.encode()).decode(),
            "per_second": {str(s): base64.b64encode(h.encode()).decode() for s, h in self.per_second.items()},
            "ok": dict(self.ok), "failed": dict(self.failed), "errors": dict(self.errors),
            "errors_at": {str(s): dict(c) for s, c in self.errors_at.items()},
            "scheduled_at": dict(self.scheduled_at), "users_at": self.users_at, "in_flight_at": self.in_flight_at,
            "scheduled": self.scheduled, "sent": self.sent, "reconnects": self.reconnects, "events": self.events,
            "first_error_at": self.first_error_at, "last_error_at": self.last_error_at,
            "recovered_at": self.recovered_at,
        }


class Merged:
    """Every worker's results added together (HDR histograms merge exactly)."""

    def __init__(self) -> None:
        self.total = Latency()
        self.per_second: dict[int, Latency] = defaultdict(Latency)
        self.ok: Counter[int] = Counter()
        self.failed: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_at: dict[int, Counter[str]] = defaultdict(Counter)
        self.scheduled_at: Counter[int] = Counter()
        self.users_at: Counter[int] = Counter()  # summed over workers
        self.in_flight_at: Counter[int] = Counter()
        self.scheduled = self.sent = self.reconnects = 0
        self.events: list[tuple[float, str]] = []
        self.first_error_at: float | None = None
        self.last_error_at: float | None = None
        self.recovered_at: float | None = None  # when the last worker to recover did
        self.unrecovered = False  # a worker's last request failed

    def add(self, part: dict[str, Any]) -> None:
        self.total.add_encoded(base64.b64decode(part["total"]))
        for second, encoded in part["per_second"].items():
            self.per_second[int(second)].add_encoded(base64.b64decode(encoded))
        self.ok.update({int(k): v for k, v in part["ok"].items()})
        self.failed.update({int(k): v for k, v in part["failed"].items()})
        self.errors.update(part["errors"])
        for second, kinds in part.get("errors_at", {}).items():
            self.errors_at[int(second)].update(kinds)
        for name in ("scheduled_at", "users_at", "in_flight_at"):
            getattr(self, name).update({int(k): v for k, v in part.get(name, {}).items()})
        self.scheduled += part["scheduled"]
        self.sent += part["sent"]
        self.reconnects += part["reconnects"]
        self.events.extend(tuple(e) for e in part["events"])
        if part["first_error_at"] is not None:
            self.first_error_at = _pick(min, self.first_error_at, part["first_error_at"])
            self.last_error_at = _pick(max, self.last_error_at, part["last_error_at"])
            if part["recovered_at"] is None:
                self.unrecovered = True
            else:
                self.recovered_at = _pick(max, self.recovered_at, part["recovered_at"])


def _pick(choose, current: float | None, new: float) -> float:
    return new if current is None else choose(current, new)
