"""The game protocol's one table from twinfer's typed errors to wire codes, and back for clients."""

from __future__ import annotations

from twinfer import errors
from twinfer.protocol import game_pb2

E = game_pb2.ErrorCode

# Most specific class first: lookup walks the MRO of the raised error.
ERROR_TO_CODE: dict[type[Exception], int] = {
    errors.InvalidInput: E.ERROR_CODE_INVALID_INPUT,
    errors.ModelNotFound: E.ERROR_CODE_MODEL_NOT_FOUND,
    errors.StreamNotFound: E.ERROR_CODE_STREAM_NOT_FOUND,
    errors.UnsupportedProtocol: E.ERROR_CODE_UNSUPPORTED_PROTOCOL,
    errors.ModelNotReady: E.ERROR_CODE_MODEL_NOT_READY,
    errors.Overloaded: E.ERROR_CODE_OVERLOADED,
    errors.RequestTimeout: E.ERROR_CODE_TIMEOUT,
    errors.InferenceFailed: E.ERROR_CODE_INFERENCE_FAILED,
    errors.Unauthenticated: E.ERROR_CODE_UNAUTHENTICATED,
    errors.Unavailable: E.ERROR_CODE_UNAVAILABLE,
    errors.PermissionDenied: E.ERROR_CODE_PERMISSION_DENIED,
    errors.InvalidFrame: E.ERROR_CODE_INVALID_FRAME,
    errors.FrameTooLarge: E.ERROR_CODE_FRAME_TOO_LARGE,
    errors.MalformedMessage: E.ERROR_CODE_MALFORMED_MESSAGE,
    errors.UnknownMessage: E.ERROR_CODE_UNKNOWN_MESSAGE,
}

CODE_TO_ERROR: dict[int, type[errors.TwinferError]] = {code: cls for cls, code in ERROR_TO_CODE.items()}


def code_for(error: BaseException) -> int:
    """The wire code of an error; anything not a TwinferError is INTERNAL."""
    for cls in type(error).__mro__:
        if cls in ERROR_TO_CODE:
            return ERROR_TO_CODE[cls]
    return E.ERROR_CODE_INTERNAL


def code_name(code: int) -> str:
    """"INVALID_INPUT" for ERROR_CODE_INVALID_INPUT, for messages and logs."""
    try:
        return E.Name(code).removeprefix("ERROR_CODE_")
    except ValueError:
        return f"CODE_{code}"
