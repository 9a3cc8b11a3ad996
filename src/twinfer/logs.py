"""Logging through twisted.logger: human text, or one JSON object per line for log collectors (Kubernetes)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
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

from twinfer.errors import ConfigError

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
_started = False
_predicate: LogLevelFilterPredicate | None = None


def set_log_level(log_level: str) -> None:
    """Change the level of a running process's log (a runtime-safe setting)."""
    if _predicate is not None:
        _predicate.setLogLevelForNamespace("", _LEVELS[log_level])


def json_line(event: dict[str, Any]) -> str:
    """One log event as a single JSON line: time, level, namespace, message (and traceback on failures)."""
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time") or time.time(), tz=timezone.utc).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str)


def json_lines_observer(stream: IO[str]) -> Callable[[dict[str, Any]], None]:
    """An observer writing `json_line` per event. Not `jsonFileLogObserver`: its record-separated format is
    Twisted's own, not the JSON lines log collectors expect. Flushed per line so a crash loses nothing."""

    def observe(event: dict[str, Any]) -> None:
        stream.write(json_line(event) + "\n")
        stream.flush()

    return observe


def setup_logging(log_format: str, log_level: str, stream: IO[str] = sys.stdout) -> None:
    """Start the global log; later calls do nothing (the global beginner can only begin once)."""
    global _started
    if _started:
        return
    if log_format not in ("text", "json") or log_level not in _LEVELS:
        raise ConfigError(f"config error: log_format/log_level: unknown {log_format!r}/{log_level!r}")
    _started = True
    global _predicate
    observer = json_lines_observer(stream) if log_format == "json" else textFileLogObserver(stream)
    predicate = _predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[log_level])
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])], redirectStandardIO=False)
