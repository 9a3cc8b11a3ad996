"""Backends run one model version's compiled graph. They are blocking and run on instance threads, never the reactor."""

from __future__ import annotations

from twinfer.backends.base import Backend, BackendOptions, load_backend

__all__ = ["Backend", "BackendOptions", "load_backend"]
