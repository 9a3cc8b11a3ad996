"""The one gate every gRPC call passes: authentication, the admin check, malformed messages and typed errors.

A grpc.aio server interceptor wraps each method's handler, so no servicer method can forget a check and unary
methods and `ModelStreamInfer` share one policy (the same one as the game protocol and HTTP, from
`twinfer.security.tokens`):

- `ServerLive` / `ServerReady` are open, for probes;
- repository load/unload need the admin token (`authorization: Bearer <admin token>`), and are refused when none is
  configured; the admin token stands on its own, it is not a login token;
- everything else needs `authorization: Bearer <token>` minted by `twinfer token` when a token secret is set.

The wrapper also turns what a client can send into typed statuses: a request that does not parse is
INVALID_ARGUMENT (grpcio's own answer is INTERNAL with a traceback in the log), a TwinferError is its status from
`twinfer.grpc.errors`, and only a real bug is INTERNAL, logged once with its traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from twisted.logger import Logger
from twisted.python.failure import Failure

from twinfer.errors import InvalidInput, TwinferError
from twinfer.grpc.errors import status_for
from twinfer.security.tokens import AdminCheck, Authenticator

log = Logger()

SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset({SERVICE + "ServerLive", SERVICE + "ServerReady"})
ADMIN_METHODS = frozenset({SERVICE + "RepositoryModelLoad", SERVICE + "RepositoryModelUnload"})


class MalformedRequest:
    """What the wrapped deserializer returns for bytes that are not the method's message, so the behaviour can
    answer INVALID_ARGUMENT itself instead of grpcio logging a traceback."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return MalformedRequest(f"request is not a valid protobuf message ({type(exc).__name__})")

    return deserialize


def _metadata_value(metadata: Any, key: str) -> str | bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value
    return None


MAX_MESSAGE_CHARS = 2000  # the status message travels as metadata: clients refuse more than 16 KiB of it


def _fits_metadata(message: str) -> str:
    """A message that echoes what the client sent (a 20,000-digit version) must not become a bigger error."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException, method: str) -> None:
    """Ends the call with `error`'s status. Anything that is not a TwinferError is a bug: logged with its
    traceback, sent as INTERNAL with a fixed message (never the exception's text)."""
    if isinstance(error, TwinferError):
        await context.abort(status_for(error), _fits_metadata(error.message))
    log.failure("gRPC {method} failed", failure=Failure(error, type(error), error.__traceback__), method=method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal server error")


Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]


class CallGuard(grpc.aio.ServerInterceptor):
    """Checks each call's credentials before its handler runs and maps every failure to a typed status.

    `now` is injected so token expiry is testable; `authenticator.authenticate_bearer` returns None (nothing
    checked) when no token secret is set, the insecure development mode."""

    def __init__(self, authenticator: Authenticator, admin: AdminCheck,
                 now: Callable[[], float] = time.time) -> None:
        self._authenticator = authenticator
        self._admin = admin
        self._now = now
        self._allowed: dict[str, Any] = {}  # method -> its wrapped handler, built once (the common case)

    def check(self, method: str, metadata: Any) -> None:
        """Raises Unauthenticated / PermissionDenied for a call that may not run."""
        if method in OPEN_METHODS:
            return
        header = _metadata_value(metadata, "authorization")
        if method in ADMIN_METHODS:
            self._admin.check(header)
        else:
            self._authenticator.authenticate_bearer(header, self._now())

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None  # an unknown method: grpcio answers UNIMPLEMENTED
        method = details.method
        try:
            self.check(method, details.invocation_metadata)
        except TwinferError as exc:
            return self._wrap(handler, method, exc)
        wrapped = self._allowed.get(method)
        if wrapped is None:
            wrapped = self._allowed[method] = self._wrap(handler, method, None)
        return wrapped

    @staticmethod
    def _wrap(handler: Any, method: str, refusal: TwinferError | None) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary(handler.unary_unary, method, refusal),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _guard_stream(handler.stream_stream, method, refusal),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        return handler  # the service has no other kinds of method


def _guard_unary(behaviour: Behaviour, method: str, refusal: TwinferError | None) -> Behaviour:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if refusal is not None:
                raise refusal
            if isinstance(request, MalformedRequest):
                raise InvalidInput(request.reason)
            return await behaviour(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            await abort_with(context, exc, method)

    return guarded


def _guard_stream(behaviour: Behaviour, method: str, refusal: TwinferError | None) -> Behaviour:
    async def guarded(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if refusal is not None:
                raise refusal
            async for answer in behaviour(requests, context):
                yield answer
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            await abort_with(context, exc, method)

    return guarded
