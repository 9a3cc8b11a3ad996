"""Service-group configs on disk: `<store>/<group>/<version>.json`, versions 1, 2, 3...; the newest is current.
Every version is kept, so a bad change is rolled back by putting the old one again.

One config server owns a store directory: the versions of each group are listed from disk once, then kept in an
index updated by `put`, so a request costs the same with 3 versions or 3,000 (a glob per request made a PUT 10x
slower at 3,000). A write that fails (a full disk, a read-only mount) leaves no temporary file and raises a typed
StoreError the HTTP layer answers without a traceback.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twinfer.atomic_files import write_atomically

GROUP_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def valid_group(name: str) -> bool:
    """1-64 ASCII letters, digits, `_.-`, starting with a letter or digit, never `..` (a path)."""
    return (0 < len(name) <= 64 and name[0] not in "_.-" and set(name) <= GROUP_NAME_CHARS
            and ".." not in name)


class StoreError(Exception):
    """A version could not be written; `message` says why in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreFull(StoreError):
    """No space (or quota) left for a new version (HTTP 507)."""


class StoreReadOnly(StoreError):
    """The store cannot be written at all (HTTP 503)."""


def _write_json(tmp: Path, settings: dict[str, Any]) -> None:
    with open(tmp, "w") as f:
        json.dump(settings, f, indent=2, sort_keys=True)


def _version_of(name: str) -> int | None:
    stem, dot, ext = name.partition(".")
    if ext != "json" or not dot or not (stem.isascii() and stem.isdigit()) or len(stem) > 18 or stem[0] == "0":
        return None
    return int(stem)


class ConfigStore:
    def __init__(self, root: Path, write_file: Callable[[Path, dict[str, Any]], None] = _write_json) -> None:
        """`write_file(tmp, settings)` is the one call that writes a version's bytes (a test gives one that fails
        like a full disk)."""
        self.root = root
        self._write_file = write_file
        self._index: dict[str, list[int]] = {}
        root.mkdir(parents=True, exist_ok=True)
        for leftover in [*root.glob("*/.*.tmp"), *root.glob("*/.new-*")]:  # a process killed mid-write
            leftover.unlink(missing_ok=True)

    def groups(self) -> dict[str, int]:
        names = [d.name for d in sorted(self.root.iterdir()) if d.is_dir() and valid_group(d.name)]
        return {name: latest for name in names if (latest := self.latest(name))}

    def versions(self, group: str) -> list[int]:
        versions = self._index.get(group)
        if versions is None:
            folder = self.root / group
            found = [_version_of(e.name) for e in os.scandir(folder)] if folder.is_dir() else []
            versions = sorted(v for v in found if v is not None)
            if versions:  # an unknown group stays unindexed, so a typo'd name costs no memory
                self._index[group] = versions
        return list(versions)

    def latest(self, group: str) -> int:
        versions = self._index.get(group) or self.versions(group)
        return versions[-1] if versions else 0

    def get(self, group: str, version: int | None = None) -> tuple[int, dict[str, Any]] | None:
        version = version or self.latest(group)
        path = self.root / group / f"{version}.json"
        if not version or not path.is_file():
            return None
        return version, json.loads(path.read_text())

    def put(self, group: str, settings: dict[str, Any]) -> int:
        version = self.latest(group) + 1
        try:
            (self.root / group).mkdir(exist_ok=True)
            write_atomically(self.root / group / f"{version}.json", lambda tmp: self._write_file(tmp, settings))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno in FULL_ERRNOS:
                raise StoreFull(f"config store {self.root} is full ({reason}); version {version} not written") \
                    from None
            if exc.errno in READ_ONLY_ERRNOS:
                raise StoreReadOnly(f"config store {self.root} is not writable ({reason})") from None
            raise StoreError(f"config store {self.root}: version {version} not written ({reason})") from None
        self._index.setdefault(group, []).append(version)
        return version
