"""The server side of service groups: pull the group's settings at start, keep a local copy so the server starts
when the config server is down, and watch for new versions, applying the ones that are safe at runtime.

Nothing the config server (or a disk) sends is trusted: a document is read with a size cap while it streams in (a
1.5 GB one took a server from 165 MB to 4.77 GB before), and its shape is checked (an object with an integer
`version`, the group's name and a `settings` object) before it is applied or cached, so a bad one can neither
take the running server's memory nor poison the next start through the cache.
"""

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
# A group's settings are a few hundred bytes; 1 MiB leaves room for long receiver lists and refuses the absurd.
MAX_DOCUMENT_BYTES = 1024 * 1024


class BadGroupDocument(ValueError):
    """A group document that is too large, not JSON, or not shaped like {"group", "version", "settings"}."""


def parse_document(raw: bytes, group: str, where: str) -> dict[str, Any]:
    """The validated document; BadGroupDocument (one line, naming `where`) otherwise."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise BadGroupDocument(f"{where}: document larger than {MAX_DOCUMENT_BYTES} bytes; refused")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadGroupDocument(f"{where}: not JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(document, dict):
        raise BadGroupDocument(f"{where}: expected a JSON object, got {type(document).__name__}")
    version = document.get("version")
    if type(version) is not int or version < 1:
        raise BadGroupDocument(f"{where}: `version` must be a positive integer, got {version!r:.40}")
    if document.get("group") != group:
        raise BadGroupDocument(f"{where}: `group` is {document.get('group')!r:.80}, expected {group!r}")
    if not isinstance(document.get("settings"), dict):
        raise BadGroupDocument(f"{where}: `settings` must be a JSON object")
    return document


def _read_capped(response: Any, where: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise BadGroupDocument(f"{where}: document of {int(declared)} bytes is larger than {MAX_DOCUMENT_BYTES}; "
                               "refused")
    raw = response.read(MAX_DOCUMENT_BYTES + 1)  # never more, whatever the headers said (or chunked)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise BadGroupDocument(f"{where}: document larger than {MAX_DOCUMENT_BYTES} bytes; refused")
    return raw


def _get(url: str, group: str, timeout: float) -> dict[str, Any] | None:
    """The validated document at url; None for 304 (long poll ended with no change)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 304:
                return None
            return parse_document(_read_capped(response, url), group, url)
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None
        raise


def cache_path(cache_dir: Path, group: str) -> Path:
    return Path(os.path.expanduser(str(cache_dir))) / f"{group}.json"


def write_cache(path: Path, document: dict[str, Any]) -> None:
    write_json_atomically(path, document)


def read_cache(path: Path, group: str) -> dict[str, Any]:
    """The cached document; BadGroupDocument or OSError (FileNotFoundError when there is none) otherwise."""
    with open(path, "rb") as f:
        raw = f.read(MAX_DOCUMENT_BYTES + 1)
    return parse_document(raw, group, str(path))


def pull_group(server: str, group: str, cache_dir: Path, timeout: float = 3.0) -> tuple[dict[str, Any], str]:
    """(document, where it came from): the config server, else the cached copy; ConfigError when neither.

    A bad cache is ignored and named in that one-line error (a versionless or list cache used to end the start
    with a KeyError or TypeError traceback); a good document from the config server replaces it.
    """
    path = cache_path(cache_dir, group)
    try:
        document = _get(f"{server.rstrip('/')}/v1/groups/{group}", group, timeout)
        if document is None:
            raise OSError("unexpected 304")
    except (OSError, ValueError) as exc:  # BadGroupDocument is a ValueError: fall back like an outage
        try:
            return read_cache(path, group), f"cached copy {path} (config server unusable: {exc})"
        except FileNotFoundError:
            cache = f"no cached copy at {path}"
        except (OSError, BadGroupDocument) as bad:
            cache = f"the cached copy was ignored ({bad})"
        raise ConfigError(f"config error: service_group {group!r}: config server {server} unusable ({exc}) "
                          f"and {cache}") from None
    write_cache(path, document)
    return document, f"config server {server}"


def watch_once(server: str, group: str, known_version: int, wait_s: float) -> dict[str, Any] | None:
    """Blocking long poll: the group's validated document once it is newer than known_version, or None after
    wait_s; BadGroupDocument for a document that must not be applied."""
    url = f"{server.rstrip('/')}/v1/groups/{group}?version={known_version}&wait={wait_s:g}"
    return _get(url, group, wait_s + 10)


def split_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(runtime-safe changed settings, names of changed settings that need a restart)."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    safe = {k: new.get(k) for k in changed if k in RUNTIME_SAFE}
    return safe, sorted(changed - RUNTIME_SAFE)
