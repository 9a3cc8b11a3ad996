"""Files that readers never see half-written: ports and status files, cached configs, model files, datasets.

A server watching a model repository, or a supervisor reading a status file, may look at any moment; writing to
a temporary name beside the target and renaming it into place means they see the old file or the whole new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None], check: Callable[[Path], None] | None = None) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then `check(tmp)` if given, then rename it into place.

    mkstemp creates 0600 files; they are widened to 0644 (what a plain `open` gives under the usual umask) so a
    server running as another user (a service account, a container user) can read what someone else built.
    Fixed rather than read from os.umask(), which can only be read by setting it: racy in a threaded process.
    A failed write or check leaves nothing behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
