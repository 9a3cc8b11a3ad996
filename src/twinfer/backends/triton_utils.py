"""`triton_python_backend_utils` as twinfer provides it: the API a Triton python model imports, in process.

The python backend registers this module under that name in `sys.modules` before it imports a model.py, so
`import triton_python_backend_utils as pb_utils` works unchanged. The names and call shapes follow Triton's python
backend (its README and examples are the reference): `Tensor`, `InferenceRequest` (the requests `execute` receives,
and BLS calls with `exec()` / `await async_exec()`), `InferenceResponse`, `TritonError`, `TritonModelException`,
`Logger`, the config helpers and the datatype tables. Tensors are plain numpy arrays (BYTES = object arrays of
`bytes`), nothing is copied through shared memory and nothing is pickled.

The errors, `ModelConfig` (auto_complete_config) and the custom metrics live in the triton_* modules beside this
one and are exported from here. BLS calls go through the facade (`ModelCaller`) of the server that loaded the calling model: the backend binds it
to the instance thread while `initialize`/`execute`/`finalize` run (`bound_caller`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

import numpy as np
from twisted.logger import Logger as _TwistedLogger

from twinfer.backends.triton_errors import TritonError, TritonModelException
from twinfer.backends.triton_metrics import Metric, MetricFamily
from twinfer.backends.triton_model_config import ModelConfig
from twinfer.backends.triton_response_sender import (
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    ResponseSender,
    SingleResponseSender,
)
from twinfer.inference.caller import ModelCaller

_local = threading.local()
_default: list[ModelCaller] = []  # the last bound caller, for threads a model starts itself


@contextlib.contextmanager
def bound_caller(caller: ModelCaller | None) -> Iterator[None]:
    """BLS calls made on this thread while the block runs go to `caller`."""
    previous = getattr(_local, "caller", None)
    _local.caller = caller
    if caller is not None:
        _default[:] = [caller]
    try:
        yield
    finally:
        _local.caller = previous


def _caller() -> ModelCaller:
    caller = getattr(_local, "caller", None) or (_default[0] if _default else None)
    if caller is None:
        raise TritonModelException("BLS requests need a running twinfer server (none is bound to this thread)")
    return caller


# --- datatypes (Triton's names and numbers) ---------------------------------------------------------------------

_TYPES: dict[str, tuple[int, Any]] = {
    "TYPE_BOOL": (1, np.bool_), "TYPE_UINT8": (2, np.uint8), "TYPE_UINT16": (3, np.uint16),
    "TYPE_UINT32": (4, np.uint32), "TYPE_UINT64": (5, np.uint64), "TYPE_INT8": (6, np.int8),
    "TYPE_INT16": (7, np.int16), "TYPE_INT32": (8, np.int32), "TYPE_INT64": (9, np.int64),
    "TYPE_FP16": (10, np.float16), "TYPE_FP32": (11, np.float32), "TYPE_FP64": (12, np.float64),
    "TYPE_STRING": (13, np.object_),
}
_NUMPY_BY_CODE = {code: np_type for code, np_type in _TYPES.values()}


def triton_string_to_numpy(triton_type_string: str) -> Any:
    """`"TYPE_FP32"` -> `np.float32`; `"TYPE_STRING"` -> `np.object_` (what model configs' data_type holds)."""
    return _TYPES[triton_type_string][1]


def triton_to_numpy_type(data_type: int) -> Any:
    return _NUMPY_BY_CODE[data_type]


def numpy_to_triton_type(data_type: Any) -> int | None:
    dtype = np.dtype(data_type)
    if dtype.kind in "OSU":
        return 13
    return next((code for code, np_type in _TYPES.values() if code != 13 and np.dtype(np_type) == dtype), None)


def serialize_byte_tensor(input_tensor: np.ndarray) -> np.ndarray | None:
    """Triton's BYTES wire framing (uint32 little-endian length + bytes per element), as a uint8 array."""
    if input_tensor.size == 0:
        return None
    parts = []
    for item in input_tensor.ravel(order="C"):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor: bytes) -> np.ndarray:
    items, offset, view = [], 0, memoryview(encoded_tensor)
    while offset < len(view):
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        items.append(bytes(view[offset:offset + length]))
        offset += length
    return np.array(items, dtype=np.object_)


# --- tensors, requests, responses ---------------------------------------------------------------------------------

class Tensor:
    """A named numpy array. BYTES tensors are object arrays (str/bytes numpy arrays are converted to that)."""

    __slots__ = ("_name", "_array", "_shared")

    def __init__(self, name: str, array: Any) -> None:
        array = np.asarray(array)
        if array.dtype.kind in "SU":
            array = array.astype(np.object_)
        self._name = name
        self._array = array
        self._shared = False

    @classmethod
    def _of_request(cls, name: str, array: np.ndarray) -> Tensor:
        """A request's input: the array may be the wire buffer (read-only) or another step's tensor that other
        steps read too, so the model gets its own copy the first time it asks (Triton's inputs are writable and
        private to the request as well)."""
        tensor = cls(name, array)
        tensor._shared = True
        return tensor

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if self._shared:
            self._array = np.array(self._array, copy=True)
            self._shared = False
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> int | None:
        return numpy_to_triton_type(self._array.dtype)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        return self.as_numpy().__dlpack__()

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        """From an object with `__dlpack__` (a torch/jax/cupy CPU tensor) or a DLPack capsule (torch's
        `to_dlpack`); the capsule form goes through torch, which made it."""
        if hasattr(capsule, "__dlpack__"):
            return Tensor(name, np.from_dlpack(capsule))
        import torch

        return Tensor(name, torch.from_dlpack(capsule).numpy())

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={self.shape()}, dtype={self._array.dtype})"


def _parameters_dict(parameters: Any) -> dict[str, Any]:
    """Parameters as a model passes them (a dict, its JSON, or None) -> a dict."""
    if isinstance(parameters, str):  # the JSON form `parameters()` returns
        try:
            parameters = json.loads(parameters) if parameters else None
        except ValueError:
            raise TritonModelException("parameters must be a dict or its JSON") from None
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise TritonModelException(f"Expect parameters to be a dictionary, got {type(parameters)}")
    return parameters


def _response_parameters(parameters: Any) -> dict[str, bool | int | str]:
    """Triton's rules for a response's parameters: a dict of str keys to bool, int or str values."""
    parameters = _parameters_dict(parameters)
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise TritonModelException(f"Expect parameters keys to have type str, found type {type(key)}")
        if not isinstance(value, (bool, int, str)):
            raise TritonModelException(f"Expect parameters values to have type bool/int/str, found type "
                                       f"{type(value)}")
    return dict(parameters)


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None,
                 parameters: Any = None) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error
        self._parameters = _response_parameters(parameters)

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return json.dumps(self._parameters)


class InferenceRequest:
    """A request: what `execute` receives, or a BLS call to another model of the repository.

    A BLS request runs through the facade like a client's (validated, batched with that model's other traffic);
    `exec()` blocks the instance thread until it finishes, `await async_exec()` lets an `async def execute` run
    several at once. Errors come back in the response (`has_error()`), as in Triton, never raised."""

    def __init__(self, request_id: str = "", correlation_id: int | str = 0, inputs: list[Tensor] | None = None,
                 requested_output_names: list[str] | None = None, model_name: str = "", model_version: int = -1,
                 flags: int = 0, timeout: int = 0, preferred_memory: Any = None, trace: Any = None,
                 parameters: Any = None) -> None:  # Triton's parameter order (models pass them by name)
        # A name read from a BYTES input is bytes (`as_numpy()[0]`); Triton takes it as the string it holds.
        self.model_name = model_name.decode("utf-8") if isinstance(model_name, bytes) else str(model_name)
        self.model_version = int(model_version)
        self._requested = list(requested_output_names or [])
        self._inputs = list(inputs or [])
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout_us = timeout
        self._parameters = parameters
        self._sender: Any = None  # a decoupled model's ResponseSender (set by the python backend)
        self._default_mode = False  # a request `execute` received from a model that is not decoupled

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout_us

    def parameters(self) -> str:
        return self._parameters if isinstance(self._parameters, str) else json.dumps(self._parameters or {})

    def is_cancelled(self) -> bool:
        """True once the client of a decoupled model's request has gone (its sends would fail)."""
        return self._sender is not None and self._sender.is_cancelled()

    def set_release_flags(self, flags: int) -> None:
        """Triton's request rescheduling (iterative sequence batching) is not supported; releasing normally is."""
        if flags & TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            raise TritonModelException("request rescheduling (TRITONSERVER_REQUEST_RELEASE_RESCHEDULE) needs "
                                       "iterative sequence batching, which twinfer does not support")

    def get_response_sender(self) -> Any:
        """The sender for this request's responses (`send(response, flags)`): any number of them for a decoupled
        model; exactly one for one in the default mode (then `execute` returns None), as Triton 24.06 allows."""
        if self._sender is None and self._default_mode:
            self._sender = SingleResponseSender()
        if self._sender is None:
            raise TritonModelException("get_response_sender() is for the requests a model's execute receives, "
                                       "not for BLS requests")
        return self._sender

    def _facade_request(self) -> Any:
        from twinfer.inference.types import InferenceRequest as FacadeRequest

        return FacadeRequest(
            model=self.model_name,
            inputs={t.name(): t.as_numpy() for t in self._inputs},
            version=str(self.model_version) if self.model_version and self.model_version > 0 else None,
            outputs=self._requested or None,
            timeout_ms=max(1, self._timeout_us // 1000) if self._timeout_us else None,
            parameters=_parameters_dict(self._parameters) or None,  # a BLS request's, for the called model
        )

    def exec(self, decoupled: bool = False) -> Any:
        """Run the request on its model and wait (on this instance thread) for the response; `decoupled=True`
        (the called model is decoupled): an iterator of its responses as they come, the last one empty when the
        model ended with the final flag alone, as Triton's."""
        from twisted.internet.threads import blockingCallFromThread
        from twisted.python.threadable import isInIOThread

        if isInIOThread():
            raise TritonModelException("BLS exec() on the reactor thread would deadlock")
        caller = _caller()
        if decoupled:
            return self._responses_of_stream(caller)
        try:
            result = blockingCallFromThread(caller.reactor, caller.infer, self._facade_request())
        except Exception as exc:  # noqa: BLE001 - Triton hands BLS errors back in the response
            return _error_response(exc)
        return _response_of(result)

    def _responses_of_stream(self, caller: ModelCaller) -> Iterator[InferenceResponse]:
        from twisted.internet.threads import blockingCallFromThread

        try:
            result = blockingCallFromThread(caller.reactor, caller.infer, self._facade_request(), True)
        except Exception as exc:  # noqa: BLE001
            yield _error_response(exc)
            return
        stream = result.stream
        if stream is None:  # not a decoupled model: its one response
            yield _response_of(result)
            return
        finished = False
        try:
            while not finished:
                item = blockingCallFromThread(caller.reactor, stream.next)
                finished = item.final
                yield _response_of_item(item)
        finally:
            if not finished:  # the caller stopped iterating: the called model's next send fails
                caller.reactor.callFromThread(stream.cancel)

    async def async_exec(self, decoupled: bool = False) -> Any:
        """Start the request on the reactor and await its response on the model's event loop; `decoupled=True`:
        await all of the decoupled model's responses (a list, iterated as Triton's)."""
        if decoupled:  # the responses are awaited on a helper thread, not on the model's event loop
            caller = _caller()
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: list(self._responses_of_stream(caller)))
        from twisted.internet.defer import maybeDeferred

        caller = _caller()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        request = self._facade_request()

        def settle(outcome: Any) -> None:
            if not future.done():
                future.set_result(outcome)

        def start() -> None:
            d = maybeDeferred(caller.infer, request)
            d.addBoth(lambda outcome: loop.call_soon_threadsafe(settle, outcome))

        caller.reactor.callFromThread(start)
        outcome = await future
        from twisted.python.failure import Failure

        if isinstance(outcome, Failure):
            return _error_response(outcome.value)
        return _response_of(outcome)


def _response_of(result: Any) -> InferenceResponse:
    return InferenceResponse([Tensor(name, array) for name, array in result.outputs.items()],
                             parameters=getattr(result, "parameters", None))


def _response_of_item(item: Any) -> InferenceResponse:
    """One response of a decoupled model (a StreamItem) as a BLS caller sees it."""
    if item.error is not None:
        return _error_response(item.error)
    return InferenceResponse([Tensor(name, array) for name, array in (item.outputs or {}).items()],
                             parameters=item.parameters)


def _error_response(exc: BaseException) -> InferenceResponse:
    from twinfer.errors import InvalidInput, ModelNotFound, ModelNotReady, TwinferError, Unavailable

    codes = {InvalidInput: TritonError.INVALID_ARG, ModelNotFound: TritonError.NOT_FOUND,
             ModelNotReady: TritonError.UNAVAILABLE, Unavailable: TritonError.UNAVAILABLE}
    message = exc.message if isinstance(exc, TwinferError) else str(exc)
    return InferenceResponse(error=TritonError(message, codes.get(type(exc), TritonError.INTERNAL)))


# --- helpers models call ------------------------------------------------------------------------------------------

def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in inference_request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in inference_response.output_tensors() if t.name() == name), None)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    """Is this (JSON-parsed) model config decoupled? Triton's examples check it in initialize."""
    return bool((model_config.get("model_transaction_policy") or {}).get("decoupled", False))


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in model_config.get("input", []) if c.get("name") == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in model_config.get("output", []) if c.get("name") == name), None)


class LogLevel(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


class Logger:
    """Triton's model logger, writing to the server's log (twisted.logger, namespace `python_model`)."""

    _log = _TwistedLogger(namespace="python_model")
    INFO, WARNING, ERROR, VERBOSE = LogLevel.INFO, LogLevel.WARNING, LogLevel.ERROR, LogLevel.VERBOSE  # Logger.INFO

    @classmethod
    def log(cls, message: str, level: LogLevel = LogLevel.INFO) -> None:
        """Emitted on the reactor thread when one is running (the log observers are not meant for threads)."""
        emit = {LogLevel.INFO: cls._log.info, LogLevel.WARNING: cls._log.warn, LogLevel.ERROR: cls._log.error,
                LogLevel.VERBOSE: cls._log.debug}[LogLevel(level)]
        caller = getattr(_local, "caller", None)
        from twisted.python.threadable import isInIOThread

        if caller is not None and not isInIOThread() and getattr(caller.reactor, "running", False):
            caller.reactor.callFromThread(emit, "{message}", message=str(message))
        else:
            emit("{message}", message=str(message))

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.log(message, LogLevel.INFO)

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.log(message, LogLevel.WARNING)

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.log(message, LogLevel.ERROR)

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.log(message, LogLevel.VERBOSE)


TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2


class PreferredMemory:
    """Where a BLS call would like its outputs (Triton's): accepted; every tensor here is in CPU memory."""

    def __init__(self, preferred_memory_type: int = TRITONSERVER_MEMORY_CPU, preferred_device_id: int = 0) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


# --- model management from a model (Triton's explicit model control, in process) --------------------------------

def _on_reactor(what: str, call: Callable[[Any], Any]) -> Any:
    """`call(facade)` on the reactor, waited for on this (instance) thread."""
    from twisted.internet.threads import blockingCallFromThread
    from twisted.python.threadable import isInIOThread

    caller = _caller()
    if caller.models is None:
        raise TritonModelException(f"{what}: no twinfer server is bound to this thread")
    if isInIOThread():
        raise TritonModelException(f"{what} on the reactor thread would deadlock")
    return blockingCallFromThread(caller.reactor, call, caller.models)


def _manage(what: str, model_name: str, action: str) -> None:
    """The facade's load / unload of a model; its errors as TritonModelException, as Triton raises them."""
    try:
        _on_reactor(what, lambda models: getattr(models, action)(model_name))
    except TritonModelException:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TritonModelException(f"failed to {action} {model_name!r}: {getattr(exc, 'message', exc)}") from None


def load_model(model_name: str, config: str = "", files: dict[str, bytes] | None = None) -> None:
    """Load (or reload) a model of the repository from its directory, and wait until it serves or fails."""
    if config or files:
        raise TritonModelException("load_model with a config or files override is not supported by twinfer: put "
                                   "the model's files in the repository and call load_model(name)")
    _manage("load_model", model_name, "load")


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    """Unload a model (its requests in flight finish first)."""
    _manage("unload_model", model_name, "unload")


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    """Is that model (that version, or its newest) serving?"""
    from twinfer.errors import ModelNotFound, ModelNotReady

    def ready(models: Any) -> bool:
        try:
            models.resolve(model_name, model_version or None)
        except (ModelNotFound, ModelNotReady):
            return False
        return True

    return bool(_on_reactor("is_model_ready", ready))

__all__ = [
    "InferenceRequest", "InferenceResponse", "Logger", "LogLevel", "Metric", "MetricFamily", "ModelConfig",
    "PreferredMemory", "ResponseSender", "TRITONSERVER_RESPONSE_COMPLETE_FINAL", "Tensor", "TritonError",
    "TritonModelException", "bound_caller", "deserialize_bytes_tensor", "get_input_config_by_name",
    "get_input_tensor_by_name", "get_output_config_by_name", "get_output_tensor_by_name", "is_model_ready",
    "load_model", "numpy_to_triton_type", "serialize_byte_tensor", "triton_string_to_numpy", "triton_to_numpy_type",
    "unload_model", "using_decoupled_model_transaction_policy",
]
