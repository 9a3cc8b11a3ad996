"""Layered settings: defaults -> YAML file -> TWINFER_* environment -> CLI flags, validated once at the end.

Each leaf remembers where it came from, so a bad value is reported as one line naming the key and its source:
`config error: tcp_port (from TWINFER_TCP_PORT): Input should be a valid integer`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from twinfer.config.settings import Settings
from twinfer.errors import ConfigError

ENV_PREFIX = "TWINFER_"
# Upper-case TWINFER_* names other tools of ours set in the same environment; every other TWINFER_* name must be a
# setting, so a typo fails loudly instead of being silently ignored.
IGNORED_ENV: tuple[str, ...] = ("TWINFER_CONFIG_WRITE_TOKEN",)  # the config server's, not a setting


def _forget(sources: dict[str, str], dotted: str) -> None:
    """Drop the recorded source of `dotted` and everything under it: a later layer replaced that subtree."""
    for key in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
        del sources[key]


def _set(tree: dict[str, Any], sources: dict[str, str], dotted: str, value: Any, source: str) -> None:
    """Put one leaf into the merged tree (deep merge: siblings from earlier layers stay) and remember its source."""
    node = tree
    *parents, leaf = dotted.split(".")
    for depth, part in enumerate(parents):
        child = node.get(part)
        if not isinstance(child, dict):
            # A scalar from an earlier layer becomes a section; its old source no longer explains anything.
            _forget(sources, ".".join(parents[: depth + 1]))
            child = node[part] = {}
        node = child
    _forget(sources, dotted)
    node[leaf] = value
    sources[dotted] = source


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """YAML sections as dotted leaves, so the file merges and reports keys exactly like env and CLI do."""
    out = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(_flatten(value, dotted + "."))
        else:
            out.append((dotted, value))
    return out


def _env_value(value: str) -> Any:
    """Environment values are strings; a JSON list (`["a", "b"]`) is how a list setting is given there."""
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value  # pydantic names the key in its error
    return value


def first_error(exc: ValidationError) -> tuple[tuple[Any, ...], str, str]:
    """(location, dotted key, readable message) of a pydantic error's first problem: one line for the user."""
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return first["loc"], key, message


def _source_of(loc: tuple[Any, ...], sources: dict[str, str]) -> str:
    """Where the value at a pydantic error location came from: the nearest recorded key at or above it,
    else a key below it."""
    dotted = ".".join(str(p) for p in loc)
    below = next((src for key, src in sources.items() if key.startswith(dotted + ".")), None)
    while dotted:
        if dotted in sources:
            return sources[dotted]
        dotted = dotted.rpartition(".")[0]
    return below or "defaults"  # a section given as keys (e.g. `tcp_port.x`) where a scalar belongs


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cli_overrides: Mapping[str, object] | None = None,
    group_layer: tuple[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Merge defaults, `config_file`, `TWINFER_*` variables of `environ` (default: os.environ) and `cli_overrides`
    (dotted keys; None = flag not given), each layer over the last, then validate once. `group_layer` = (source
    label, settings) from the config server, between the YAML file and the environment.

    Validating once at the end (rather than per layer) lets a later layer fix an earlier one's value, and every
    error becomes one `ConfigError` line naming the dotted key and the layer its value came from.
    """
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        try:
            data = yaml.safe_load(Path(config_file).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config error: cannot read {config_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config error: {config_file} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config error: {config_file}: expected a mapping of settings")
        for dotted, value in _flatten(data):
            _set(tree, sources, dotted, value, str(config_file))
    if group_layer is not None:
        label, data = group_layer
        for dotted, value in _flatten(data):
            _set(tree, sources, dotted, value, label)
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in IGNORED_ENV:
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        if not all(dotted.split(".")):
            raise ConfigError(f"config error: {name}: not a setting name (use TWINFER_KEY or TWINFER_SECTION__KEY)")
        _set(tree, sources, dotted, _env_value(value), name)
    for dotted, value in (cli_overrides or {}).items():
        if value is not None:
            _set(tree, sources, dotted, value, "command line")
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        loc, key, message = first_error(exc)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"config error: {key} (from {_source_of(loc, sources)}): {message}{more}") from None
