"""The gRPC front-end's one table from twinfer's typed errors to status codes."""

from __future__ import annotations

import grpc

from twinfer import errors

STATUS_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.InferenceFailed: grpc.StatusCode.INTERNAL,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ProtocolError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


# Triton's gRPC status for the codes of a model's TritonError (grpc_utils.cc CodeToStatus)
STATUS_BY_MODEL_ERROR = {"NOT_FOUND": grpc.StatusCode.NOT_FOUND, "UNSUPPORTED": grpc.StatusCode.UNIMPLEMENTED,
                         "UNKNOWN": grpc.StatusCode.UNKNOWN, "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
                         "CANCELLED": grpc.StatusCode.CANCELLED}


def status_for(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, errors.ModelReportedError):
        return STATUS_BY_MODEL_ERROR.get(error.kind, grpc.StatusCode.INTERNAL)
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL
