"""Triton's response sender: how a decoupled python model answers one request with any number of responses.

    sender = request.get_response_sender()
    sender.send(pb_utils.InferenceResponse(output_tensors=[...]))           # any number of times, any thread
    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)        # then once: the request is done

Each response goes to the request's ResponseStream (twinfer.inference.response_stream), which the transport reads
while the model sends; `send` blocks while the client is `MAX_PENDING` responses behind. Errors are Triton's: a
send after the final flag, or after the client has gone, raises TritonModelException ("Unable to send
response..."); a response carrying a TritonError fails that response only and the stream goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twinfer.backends.triton_errors import TritonModelException
from twinfer.inference.response_stream import ResponseStream, ResponseStreamClosed, StreamItem

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


def _is_final(response: Any, flags: int) -> bool:
    """The final flag of a send; a send with neither a response nor the flag is refused, as Triton does."""
    final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    if response is None and not final:
        raise TritonModelException("Unable to send response: send() needs a response, the "
                                   "TRITONSERVER_RESPONSE_COMPLETE_FINAL flag, or both")
    return final


class ResponseSender:
    __slots__ = ("_stream", "_convert")

    def __init__(self, stream: ResponseStream, convert: Callable[[Any, bool], StreamItem]) -> None:
        self._stream = stream
        self._convert = convert  # InferenceResponse, final -> StreamItem (the backend's rules for outputs/errors)

    def send(self, response: Any = None, flags: int = 0) -> None:
        final = _is_final(response, flags)
        item = StreamItem(final=True) if response is None else self._convert(response, final)
        try:
            self._stream.put(item)
        except ResponseStreamClosed as exc:
            raise TritonModelException(f"Unable to send response. {exc}") from None

    def is_cancelled(self) -> bool:
        return self._stream.cancelled


class SingleResponseSender:
    """The sender of a request to a model in Triton's default (non-decoupled) mode, which since Triton 24.06 may
    answer through it instead of returning responses: exactly one response per request, the final flag with it or
    after it; `execute` then returns None and the backend takes the response from here."""

    __slots__ = ("_lock", "_final", "response")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._final = threading.Event()
        self.response: Any = None

    def send(self, response: Any = None, flags: int = 0) -> None:
        with self._lock:
            if self._final.is_set():
                raise TritonModelException("Unable to send response. Response sender has been closed.")
            final = _is_final(response, flags)
            if response is not None:
                if self.response is not None:
                    raise TritonModelException("Unable to send response: a model that is not decoupled sends "
                                               "exactly one response per request")
                self.response = response
            if final:
                self._final.set()

    def wait(self, timeout_s: float) -> bool:
        """Blocks until the final flag (True) or the timeout (False)."""
        return self._final.wait(timeout_s)

    def is_cancelled(self) -> bool:
        return False
