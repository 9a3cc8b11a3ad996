"""Client-side errors: the server's typed errors rebuilt from their wire codes, plus the end of a session.

A client catches the same classes the server raises (`twinfer.errors`), so code written against the in-process
API handles a remote `ModelNotFound` unchanged; `.code` keeps the exact wire code for logs and for codes that have
no class of their own.
"""

from __future__ import annotations

from twinfer.errors import TwinferError
from twinfer.protocol import game_pb2
from twinfer.protocol.error_codes import CODE_TO_ERROR, code_name


class ServerError(TwinferError):
    """An INTERNAL or an unknown error code: a server bug or a newer server, nothing the request can fix."""

    code: int


class SessionClosed(TwinferError):
    """The connection is gone: closed by either side, broken, or the server kicked this session.

    `code` is the kick's wire code (ERROR_CODE_UNSPECIFIED when the connection simply ended) and `reason` the
    server's or the client's explanation. Every request in flight fails with it, and so does every later call.
    """

    def __init__(self, reason: str, code: int = game_pb2.ERROR_CODE_UNSPECIFIED) -> None:
        super().__init__(reason)
        self.code = code

    @property
    def reason(self) -> str:
        return self.message


def error_from_wire(code: int, message: str) -> TwinferError:
    """The typed exception for a wire Error; `.code` keeps the wire code, an empty message becomes the code name."""
    cls = CODE_TO_ERROR.get(code, ServerError)
    error = cls(message or code_name(code))
    error.code = code  # type: ignore[attr-defined]
    return error
