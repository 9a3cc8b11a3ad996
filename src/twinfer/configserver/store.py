"""Service-group configs on disk: `<store>/<group>/<version>.json`, versions 1, 2, 3...; the newest is current.
Every version is kept, so a bad change is rolled back by putting the old one again."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: `$` matches before a final \n


def valid_group(name: str) -> bool:
    return bool(GROUP_NAME.fullmatch(name)) and ".." not in name


class ConfigStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def groups(self) -> dict[str, int]:
        return {d.name: self.latest(d.name) for d in sorted(self.root.iterdir()) if d.is_dir() and valid_group(d.name)
                and self.latest(d.name)}

    def versions(self, group: str) -> list[int]:
        folder = self.root / group
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())

    def latest(self, group: str) -> int:
        versions = self.versions(group)
        return versions[-1] if versions else 0

    def get(self, group: str, version: int | None = None) -> tuple[int, dict[str, Any]] | None:
        version = version or self.latest(group)
        path = self.root / group / f"{version}.json"
        if not version or not path.is_file():
            return None
        return version, json.loads(path.read_text())

    def put(self, group: str, settings: dict[str, Any]) -> int:
        folder = self.root / group
        folder.mkdir(exist_ok=True)
        version = self.latest(group) + 1
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-")
        with os.fdopen(fd, "w") as f:
            json.dump(settings, f, indent=2, sort_keys=True)
        os.replace(tmp, folder / f"{version}.json")
        return version
