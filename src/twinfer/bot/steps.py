"""Scenario steps as commands: one function per step kind, found in one registry (`STEPS`). A step runs on a
connection and fires with None on success or with the error kind; it records its own latency."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

if TYPE_CHECKING:
    from twinfer.bot.engine import Engine

Step = Callable[["Engine", Any, dict[str, Any]], Deferred]


def infer(engine: Engine, connection: Any, args: dict[str, Any]) -> Deferred:
    return engine.timed(connection.infer(), engine.now())


def ping(engine: Engine, connection: Any, args: dict[str, Any]) -> Deferred:
    return engine.timed(connection.ping(), engine.now())


def login(engine: Engine, connection: Any, args: dict[str, Any]) -> Deferred:
    return engine.timed(connection.login(args.get("user")), engine.now())


def think(engine: Engine, connection: Any, args: dict[str, Any]) -> Deferred:
    """Wait `ms` milliseconds (a user reading the answer), recorded as nothing."""
    return deferLater(engine.reactor, float(args.get("ms", 100)) / 1e3, lambda: None)


def pace(engine: Engine, connection: Any, args: dict[str, Any]) -> Deferred:
    """Wait until the next tick of `fps` (a camera's frame clock) counted from the start."""
    fps = float(args.get("fps", engine.scenario.fps))
    elapsed = engine.now() - engine.recorder.start
    wait = (int(elapsed * fps) + 1) / fps - elapsed
    return deferLater(engine.reactor, wait, lambda: None)


STEPS: dict[str, Step] = {"infer": infer, "ping": ping, "login": login, "think": think, "pace": pace,
                          "send_frame": infer}
