"""Which of a backend's per-device objects (sessions, modules, device names) the calling instance thread uses.

A version's instance threads share one backend; instance i runs on device i of the placement. The first call from
each thread takes the next instance slot, so N instance threads spread over the N placed instances (a caller's own
worker thread, ModelVersion.run_inline, takes a slot the same way, wrapping around)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class PerInstance(Generic[T]):
    def __init__(self, per_instance: Sequence[T]) -> None:
        if not per_instance:
            raise ValueError("at least one instance")
        self._items = tuple(per_instance)
        self._slots = itertools.count()  # next() is atomic under the GIL
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self._items)

    def current(self) -> T:
        item = getattr(self._local, "item", None)
        if item is None:
            item = self._local.item = self._items[next(self._slots) % len(self._items)]
        return item
