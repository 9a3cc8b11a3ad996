"""Logging through twisted.logger: human text, or one JSON object per line for log collectors (Kubernetes)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
_started = False


def json_line(event: dict[str, Any]) -> str:
    """One log event as a single JSON line: time, level, namespace, message (and traceback on failures)."""
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), tz=timezone.utc).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str)


def json_lines_observer(stream: IO[str]):
    def observe(event: dict[str, Any]) -> None:
        stream.write(json_line(event) + "\n")
        stream.flush()

    return observe


def setup_logging(log_format: str, log_level: str, stream: IO[str] = sys.stdout) -> None:
    """Start the global log; later calls do nothing (the global beginner can only begin once)."""
    global _started
    if _started:
        return
    _started = True
    observer = json_lines_observer(stream) if log_format == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[log_level])
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])], redirectStandardIO=False)
