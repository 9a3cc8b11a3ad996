"""Files a model's config names (label files, validation sets) must lie inside that model's directory.

A config is data an operator may have taken from elsewhere; `label_filename: "../../outside/secret.txt"` once made
the server read a file outside the repository and serve it through model metadata. Every such path is resolved
(symlinks included) and refused unless it stays under the model directory.
"""

from __future__ import annotations

from pathlib import Path

from twinfer.errors import ConfigError


def inside_model_dir(model_dir: Path, relative: str, what: str, where: Path | str) -> Path:
    """`model_dir / relative`, resolved; a ConfigError naming `where` (the config file) when it leaves the dir."""
    if not relative or "\0" in relative or Path(relative).is_absolute():
        raise ConfigError(f"{where}: {what} {relative!r}: must be a path relative to the model directory")
    root = model_dir.resolve()
    path = (model_dir / relative).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"{where}: {what} {relative!r}: outside the model directory {model_dir}")
    return path
