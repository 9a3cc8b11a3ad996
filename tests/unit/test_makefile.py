"""The Makefile's two commands (#18 item 9): `make run` installs only what serving the demo needs (the core
dependencies, no extra: the test extra is 2.8 GB with PyTorch and TensorFlow), `make test` installs the test extra.

Checked with `make -n` in an empty copy (no .venv), so every recipe on the way is printed and none runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="needs make")


def dry_run(tmp_path: Path, target: str) -> list[str]:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    out = subprocess.run([MAKE, "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30)
    return [line for line in out.stdout.splitlines() if re.search(r"pip install", line)]


def installs(lines: list[str]) -> list[str]:
    """The package arguments of each `pip install` (the upgrade of pip itself left out)."""
    specs = []
    for line in lines:
        args = [a.strip("'\"") for a in line.split()[2:] if not a.startswith("--") and a != "-e"]
        specs += [a for a in args if a != "pip"]
    return specs


def test_make_run_installs_the_core_dependencies_only(tmp_path: Path) -> None:
    specs = installs(dry_run(tmp_path, "run"))
    assert specs == ["."], specs


def test_make_test_installs_the_test_extra(tmp_path: Path) -> None:
    specs = installs(dry_run(tmp_path, "test"))
    assert ".[test]" in specs, specs
