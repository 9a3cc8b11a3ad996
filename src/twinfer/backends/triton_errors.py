"""Triton's python-backend error types (`pb_utils.TritonError`, `pb_utils.TritonModelException`)."""

from __future__ import annotations


class TritonError:
    """An error a model puts in an InferenceResponse (that request alone fails) or a BLS response carries."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r})"


class TritonModelException(Exception):
    """Raised by a model (or by this module) to fail the requests of the current `execute` call."""

    def message(self) -> str:
        return str(self.args[0]) if self.args else ""
