"""One budget for the request bodies every HTTP connection of the process holds at once.

A per-request size limit does not bound memory: ten slow 60 MB uploads are each under it and together held
972 MB (issue #14, finding 13). Connections take bytes from this budget as body chunks are buffered and give them
back when the request is answered or the connection drops; a chunk that does not fit is refused (503) instead of
growing the process.
"""

from __future__ import annotations


class BodyBudget:
    """Bytes of request bodies held across connections; reactor-thread only, so no lock."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (and nothing reserved) when they do not fit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
