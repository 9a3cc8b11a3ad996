"""`ModelStreamInfer` with bounded memory: backpressure per stream, a cap on open streams per process.

Per stream, a request takes a slot when it is read and gives it back when its answer has been handed to grpcio
(the generator resumes after the send completes, and a send waits on HTTP/2 flow control). With `max_inflight`
slots taken (in flight + answered but unsent) the stream stops reading: the client's writes then wait on flow
control. A client that sends and never reads holds at most `max_inflight` requests and answers, not an unbounded
queue (before: +8 MB/s and a bystander's p99 from 7.9 to 140 ms).

Per process, `OpenStreamLimit` refuses a stream past the cap with RESOURCE_EXHAUSTED and a message that names the
setting, instead of letting load decide which calls die.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tritonclient.grpc import service_pb2 as pb
from twisted.logger import Logger
from twisted.python.failure import Failure

from twinfer.errors import InvalidInput, Overloaded, TwinferError
from twinfer.grpc.guard import MalformedRequest

log = Logger()

Infer = Callable[[pb.ModelInferRequest], Awaitable[pb.ModelInferResponse]]
_END = object()


class OpenStreamLimit:
    """How many `ModelStreamInfer` calls one process has open, with a cap (`grpc_max_open_streams`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def enter(self) -> None:
        if self.open >= self.limit:
            raise Overloaded(f"too many ModelStreamInfer calls open ({self.limit}, the server's "
                             "grpc_max_open_streams); retry later or use unary ModelInfer")
        self.open += 1

    def leave(self) -> None:
        self.open -= 1


def error_answer(request_id: str, error: BaseException) -> pb.ModelStreamInferResponse:
    """An error travels in the stream (the stream stays open), as Triton does."""
    if isinstance(error, TwinferError):
        message = error.message
    else:
        log.failure("gRPC ModelStreamInfer request failed", failure=Failure(error, type(error), error.__traceback__))
        message = "internal server error"
    return pb.ModelStreamInferResponse(error_message=message, infer_response=pb.ModelInferResponse(id=request_id))


async def stream_answers(requests: AsyncIterator[Any], infer: Infer,
                         max_inflight: int) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """Requests run concurrently (up to `max_inflight`); each answer goes out as soon as it is ready, matched to
    its request by `id`."""
    slots = asyncio.Semaphore(max_inflight)
    answers: asyncio.Queue[Any] = asyncio.Queue()  # never holds more than max_inflight answers
    running: set[asyncio.Task[None]] = set()

    async def one(request: Any) -> None:
        request_id = getattr(request, "id", "")
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidInput(request.reason)
            answers.put_nowait(pb.ModelStreamInferResponse(infer_response=await infer(request)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - errors travel in the stream
            answers.put_nowait(error_answer(request_id, exc))

    async def read_all() -> None:
        try:
            iterator = requests.__aiter__()
            while True:
                await slots.acquire()
                try:
                    request = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                task = asyncio.ensure_future(one(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*list(running))
            answers.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the generator re-raises it as the call's status
            answers.put_nowait(exc)

    reader = asyncio.ensure_future(read_all())
    try:
        while (answer := await answers.get()) is not _END:
            if isinstance(answer, BaseException):
                raise answer
            yield answer
            slots.release()
    finally:
        reader.cancel()
        for task in list(running):
            task.cancel()
