"""The HTTP front-end's one table from twinfer's typed errors to status codes."""

from __future__ import annotations

from twinfer import errors

STATUS_BY_ERROR: dict[type[Exception], int] = {
    errors.InvalidInput: 400,
    errors.ModelNotFound: 404,
    errors.ModelNotReady: 503,
    errors.Overloaded: 503,
    errors.RequestTimeout: 504,
    errors.InferenceFailed: 500,
    errors.Unauthenticated: 401,
    errors.Unavailable: 503,
    errors.FrameTooLarge: 413,
    errors.ProtocolError: 400,
}


class NotFoundRoute(errors.TwinferError):
    """No endpoint at this path (404)."""


class MethodNotAllowed(errors.TwinferError):
    """The path exists but not for this method (405)."""


class PayloadTooLarge(errors.TwinferError):
    """A body (or its JSON part) above the limit for its kind (413)."""


Forbidden = errors.PermissionDenied  # 403; the old name, kept for the config server


STATUS_BY_ERROR.update({NotFoundRoute: 404, MethodNotAllowed: 405, PayloadTooLarge: 413,
                        errors.PermissionDenied: 403})


# Triton's HTTP status for the codes of a model's TritonError (http_server.cc HttpCodeFromError)
STATUS_BY_MODEL_ERROR = {"NOT_FOUND": 404, "UNSUPPORTED": 501, "UNKNOWN": 400, "ALREADY_EXISTS": 400,
                         "CANCELLED": 400}


def status_for(error: BaseException) -> int:
    if isinstance(error, errors.ModelReportedError):
        return STATUS_BY_MODEL_ERROR.get(error.kind, 500)
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500
