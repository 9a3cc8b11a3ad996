"""The server side of service groups: pull the group's settings at start, keep a local copy so the server starts
when the config server is down, and watch for new versions, applying the ones that are safe at runtime."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from twinfer.errors import ConfigError
from twinfer.jsonfile import write_json_atomically

# Settings a running server can take without a restart; anything else waits for one (and is logged as such).
RUNTIME_SAFE = frozenset({
    "log_level", "repository_poll_s", "idle_timeout_s", "login_timeout_s", "max_inflight_per_session",
    "stream_heartbeat_timeout_s", "stream_receivers", "drain_timeout_s",
})


def _get(url: str, timeout: float) -> dict[str, Any] | None:
    """The JSON document at url; None for 304 (long poll ended with no change)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 304:
                return None
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None
        raise


def cache_path(cache_dir: Path, group: str) -> Path:
    return Path(os.path.expanduser(str(cache_dir))) / f"{group}.json"


def write_cache(path: Path, document: dict[str, Any]) -> None:
    write_json_atomically(path, document)


def pull_group(server: str, group: str, cache_dir: Path, timeout: float = 3.0) -> tuple[dict[str, Any], str]:
    """(document, where it came from): the config server, else the cached copy; ConfigError when neither."""
    path = cache_path(cache_dir, group)
    try:
        document = _get(f"{server.rstrip('/')}/v1/groups/{group}", timeout)
        if document is None:
            raise OSError("unexpected 304")
    except (OSError, ValueError) as exc:
        if path.is_file():
            cached = json.loads(path.read_text())
            return cached, f"cached copy {path} (config server unreachable: {exc})"
        raise ConfigError(f"config error: service_group {group!r}: config server {server} unreachable ({exc}) "
                          f"and no cached copy at {path}") from None
    write_cache(path, document)
    return document, f"config server {server}"


def watch_once(server: str, group: str, known_version: int, wait_s: float) -> dict[str, Any] | None:
    """Blocking long poll: the group's document once it is newer than known_version, or None after wait_s."""
    url = f"{server.rstrip('/')}/v1/groups/{group}?version={known_version}&wait={wait_s:g}"
    return _get(url, wait_s + 10)


def split_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(runtime-safe changed settings, names of changed settings that need a restart)."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    safe = {k: new.get(k) for k in changed if k in RUNTIME_SAFE}
    return safe, sorted(changed - RUNTIME_SAFE)
