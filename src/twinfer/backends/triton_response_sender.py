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

from collections.abc import Callable
from typing import Any

from twinfer.backends.triton_errors import TritonModelException
from twinfer.inference.response_stream import ResponseStream, ResponseStreamClosed, StreamItem

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class ResponseSender:
    __slots__ = ("_stream", "_convert")

    def __init__(self, stream: ResponseStream, convert: Callable[[Any, bool], StreamItem]) -> None:
        self._stream = stream
        self._convert = convert  # InferenceResponse, final -> StreamItem (the backend's rules for outputs/errors)

    def send(self, response: Any = None, flags: int = 0) -> None:
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None and not final:
            raise TritonModelException("Unable to send response: send() needs a response, the "
                                       "TRITONSERVER_RESPONSE_COMPLETE_FINAL flag, or both")
        item = StreamItem(final=True) if response is None else self._convert(response, final)
        try:
            self._stream.put(item)
        except ResponseStreamClosed as exc:
            raise TritonModelException(f"Unable to send response. {exc}") from None

    def is_cancelled(self) -> bool:
        return self._stream.cancelled
