"""The one error hierarchy of twinfer.

Every failure a client can cause or observe is one of these types. Front-ends never invent their own errors: each
transport maps these classes to its wire codes in one table (`twinfer.protocol.error_codes` for the game protocol,
the HTTP and gRPC front-ends have theirs), so a wrong shape is the same error over TCP, UDP, HTTP and gRPC.
"""

from __future__ import annotations


class TwinferError(Exception):
    """Base of every error a client may see. `message` is safe to send over the wire."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(TwinferError):
    """The request does not match the model's signature (names, datatype, shape, batch size)."""


class UnusableFrame(InvalidInput):
    """A stream frame the server cannot turn into pixels; `reason` says which way, for the session's FrameErrors
    report: "wrong_size" (raw length is not width * height * channels), "undecodable" (not a readable JPEG),
    "too_large" (a JPEG bigger than the stream's opened size)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelNotFound(TwinferError):
    """No such model, or no such version of it."""


class StreamNotFound(TwinferError):
    """No such stream on this session: never opened, already closed, or another session's."""


class UnsupportedProtocol(TwinferError):
    """The client's protocol version is outside what this server speaks."""


class ModelNotReady(TwinferError):
    """The model is known but has no version ready to serve."""


class Overloaded(TwinferError):
    """A queue or an in-flight limit is full; the client should back off and retry."""


class RequestTimeout(TwinferError):
    """The request waited longer than its timeout before it could run."""


class InferenceFailed(TwinferError):
    """The backend raised while running the model."""


class ModelReportedError(InferenceFailed):
    """A python model failed a request with a TritonError whose code has a status of its own in KServe (Triton's
    names: UNKNOWN, NOT_FOUND, UNSUPPORTED, ALREADY_EXISTS, CANCELLED). The HTTP and gRPC tables read `kind`, as
    Triton maps them; the game protocol reports INFERENCE_FAILED."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Unauthenticated(TwinferError):
    """A missing, malformed, forged or expired token."""


class PermissionDenied(TwinferError):
    """Authenticated (or not needing to be), but not allowed: an admin action without the admin token, a stream
    receiver outside the allowed networks."""


class Unavailable(TwinferError):
    """The server is shutting down or the model is being unloaded."""


class ProtocolError(TwinferError):
    """A frame or message that breaks the wire protocol."""


class InvalidFrame(ProtocolError):
    """A header the server cannot accept (unknown flags)."""


class FrameTooLarge(ProtocolError):
    """A declared body length above the configured maximum."""


class MalformedMessage(ProtocolError):
    """A body that does not parse as the expected protobuf message."""


class UnknownMessage(ProtocolError):
    """A message type the server has no command for."""


class ConfigError(Exception):
    """A bad setting or model configuration; the message names the key and is meant for one log line."""


class VersionRefused(ConfigError):
    """`twinfer train` would publish a version that its own validation gate refuses (a restart must not hide a
    good version behind it): nothing is published unless `--publish-anyway`."""


class ModelLoadError(Exception):
    """A model version could not be loaded or failed its warm-up."""
