"""JSON files that readers never see half-written: ports files, status files, cached configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinfer.atomic_files import write_atomically


def write_json_atomically(path: Path, data: Any) -> None:
    """Readers see the old file or the whole new one (see twinfer.atomic_files)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f)

    write_atomically(path, write)
