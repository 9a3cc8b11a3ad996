"""Request limits every transport applies the same way, before it allocates anything a request declares."""

from __future__ import annotations

import math
from typing import Any

from twinfer.errors import InvalidInput

DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024  # settings.max_request_elements' default


class ElementBudget:
    """The tensor elements one request may still declare, across all its inputs.

    Checked from the declared shape before anything is allocated: a shape of [3000000000] with 4 bytes of data once
    made the server allocate 3e9 objects (23 GB) before it looked at the data. Every transport's decoder takes one
    budget per request (`max_request_elements`)."""

    __slots__ = ("limit", "left")

    def __init__(self, limit: int = DEFAULT_MAX_ELEMENTS) -> None:
        self.limit = limit
        self.left = limit

    def take(self, name: str, shape: tuple[int, ...]) -> int:
        """The shape's element count, taken from the budget. Zero dimensions do not hide the others: [0, 2**62]
        holds nothing, but numpy refuses to even describe it, so the extent (zeros counted as 1) must fit too."""
        count = math.prod(shape)
        extent = count or math.prod(d or 1 for d in shape)  # only a zero dimension makes them differ
        if count > self.left or extent > self.limit:
            raise InvalidInput(
                f"input {name!r}: shape {short_shape(shape)} declares {max(count, extent)} elements; a request may "
                f"declare at most {self.limit} in all (max_request_elements)"
            )
        self.left -= count
        return count


def short_shape(shape: Any) -> str:
    """A shape for an error message, cut short: an attacker's million-dimension shape must not fill the log."""
    text = repr(list(shape)) if isinstance(shape, (list, tuple)) else repr(shape)
    return text if len(text) <= 80 else text[:77] + "..."
