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
IGNORED_ENV: tuple[str, ...] = ()


def _set(tree: dict[str, Any], sources: dict[str, str], dotted: str, value: Any, source: str) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value
    sources[dotted] = source


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
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


def _source_of(loc: tuple[Any, ...], sources: dict[str, str]) -> str:
    dotted = ".".join(str(p) for p in loc)
    while dotted:
        if dotted in sources:
            return sources[dotted]
        dotted = dotted.rpartition(".")[0]
    return "defaults"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cli_overrides: Mapping[str, object] | None = None,
) -> Settings:
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
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in IGNORED_ENV:
            continue
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        _set(tree, sources, dotted, _env_value(value), name)
    for dotted, value in (cli_overrides or {}).items():
        if value is not None:
            _set(tree, sources, dotted, value, "command line")
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"config error: {key} (from {_source_of(first['loc'], sources)}): {message}{more}") from None
