"""Importing a python model's model.py (and the helper modules beside it) without touching `sys.path`.

Triton imports model.py as `<version>.model` with the model and version directories on its stub's `sys.path`, one
process per model. Here every model shares one interpreter, and models load on several threads at once, so:

- model.py becomes `<package>.model` in a package made for this load whose `__path__` is the version directory:
  `from . import utils` works and stays private to the load (versions and hot reloads never share module state).
- `import utils` of a helper beside it is resolved by `_HelperFinder`, last on `sys.meta_path` (installed
  packages win, as in Triton where the directory is appended to the path), only on the thread that is importing
  or initializing that model; the helpers it finds are dropped from `sys.modules` afterwards (the model keeps its
  references), so two models' `utils.py` never stand in for each other (python models import and initialize one
  at a time for this; other models load alongside). `sys.path` itself is never changed:
  another thread's import iterating over it while it shifts can skip an entry (site-packages, then "No module
  named onnxruntime"), which is what changing it did.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from twinfer.backends import triton_utils
from twinfer.errors import ModelLoadError

sys.modules.setdefault("triton_python_backend_utils", triton_utils)  # `import triton_python_backend_utils`
_importing = threading.local()
_one_model_at_a_time = threading.RLock()
_load_counter = itertools.count(1)


class _HelperFinder(importlib.abc.MetaPathFinder):
    """Top-level imports from the version directory of the model this thread is loading."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        directories = getattr(_importing, "directories", None)
        if not directories or path is not None or "." in name:
            return None
        return importlib.machinery.PathFinder.find_spec(name, directories)


if not any(isinstance(f, _HelperFinder) for f in sys.meta_path):
    sys.meta_path.append(_HelperFinder())


@contextlib.contextmanager
def helpers_of(directory: Path, keep_prefix: str = "") -> Iterator[None]:
    """While the block runs on this thread, `import x` also finds `directory/x.py`; helpers imported from there
    are dropped from sys.modules afterwards (names under `keep_prefix`, the load's own package, stay)."""
    directory = directory.resolve()
    with _one_model_at_a_time:  # two models' `helpers` would share the one sys.modules["helpers"] slot meanwhile
        previous = getattr(_importing, "directories", None)
        _importing.directories = [str(directory)]
        before = set(sys.modules)
        try:
            yield
        finally:
            _importing.directories = previous
            for name in set(sys.modules) - before:
                if keep_prefix and (name == keep_prefix or name.startswith(keep_prefix + ".")):
                    continue
                file = getattr(sys.modules.get(name), "__file__", None)
                if file and Path(file).resolve().is_relative_to(directory):
                    sys.modules.pop(name, None)


# What a model's own code may raise: any Exception, and also SystemExit / KeyboardInterrupt, which are not
# Exceptions. A model.py that calls sys.exit() (unittest.main() does, when its argv is not a test runner's) must fail
# that model, not stop the server: caught from its import, auto_complete_config, initialize, execute and finalize.
MODEL_CODE_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


def import_model_file(model_name: str, model_file: Path) -> ModuleType:
    """model.py as a fresh module of its own package (see the module docstring); ModelLoadError if it fails."""
    tag = re.sub(r"\W", "_", f"{model_name}_v{model_file.parent.name}")
    package_name = f"twinfer_python_model_{tag}_{next(_load_counter)}"
    module_name = f"{package_name}.{model_file.stem}"
    package = ModuleType(package_name)
    package.__path__ = [str(model_file.parent.resolve())]
    package.__package__ = package_name
    spec = importlib.util.spec_from_file_location(module_name, model_file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"model {model_name!r}: cannot import {model_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[package_name] = package
    sys.modules[module_name] = module
    try:
        with helpers_of(model_file.parent, package_name):
            spec.loader.exec_module(module)
    except MODEL_CODE_ERRORS as exc:
        forget_model_module(module)
        raise ModelLoadError(f"model {model_name!r}: importing {model_file} failed: {type(exc).__name__}: "
                             f"{exc}") from exc
    return module


def forget_model_module(module: ModuleType) -> None:
    """Drop a model module and everything imported under its package from sys.modules (on unload)."""
    package_name = module.__name__.rpartition(".")[0] or module.__name__
    for name in [n for n in sys.modules if n == package_name or n.startswith(package_name + ".")]:
        sys.modules.pop(name, None)
