"""Client-side errors: the server's typed errors rebuilt from their wire codes."""

from __future__ import annotations

from twinfer.errors import TwinferError
from twinfer.protocol import game_pb2
from twinfer.protocol.error_codes import CODE_TO_ERROR, code_name


class ServerError(TwinferError):
    """An INTERNAL or unknown error code from the server."""


class SessionClosed(TwinferError):
    """The connection closed (or the server kicked this session); `code` and `message` say why."""

    def __init__(self, message: str, code: int = game_pb2.ERROR_CODE_UNSPECIFIED) -> None:
        super().__init__(message)
        self.code = code


def error_from_wire(code: int, message: str) -> TwinferError:
    """The typed exception for a wire Error; `.code` keeps the wire code."""
    cls = CODE_TO_ERROR.get(code, ServerError)
    error = cls(message or code_name(code))
    error.code = code  # type: ignore[attr-defined]
    return error
