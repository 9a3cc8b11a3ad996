"""`python`: a Triton python model (model.py with `TritonPythonModel`) run in the server process.

Triton runs such models in a stub process and moves every tensor through shared memory; here `execute` is called
directly on the version's instance threads with numpy arrays, and the dynamic batcher hands it the list of
requests it gathered (`run_requests`), as Triton does. One TritonPythonModel object per instance (`instance_count`),
each used by one thread at a time. model.py is server code: it is imported from the repository's version
directory only (under a module name unique to this load, so versions and hot reloads never share module state),
never from anything a request carries.

Errors: an exception from `execute` fails the requests of that call (InferenceFailed with its message); an
InferenceResponse carrying a TritonError fails its request alone; a wrong number of responses fails the call.

Decoupled models (`model_transaction_policy { decoupled: true }`): each request carries the ResponseStream the
facade made for it, `get_response_sender()` sends into it from any thread, and `execute` returns None (Triton's
contract); an exception from `execute` ends the streams of that call's requests that are still open, with its
message.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from twisted.logger import Logger
from twisted.python.failure import Failure

from twinfer.backends import triton_utils as pb_utils
from twinfer.backends.base import BackendOptions
from twinfer.backends.python_import import MODEL_CODE_ERRORS, forget_model_module, helpers_of, import_model_file
from twinfer.errors import (
    InferenceFailed,
    InvalidInput,
    ModelLoadError,
    ModelReportedError,
    TwinferError,
    Unavailable,
)
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.placement import GpuInventory, place_instances
from twinfer.inference.response_stream import ResponseStream, StreamItem
from twinfer.inference.types import Outputs

_log = Logger()
SENT_RESPONSE_WAIT_S = 30.0  # default mode: how long after execute returns None the senders' final flags may take
# TritonError codes with a status of their own (twinfer.errors.ModelReportedError); INTERNAL is InferenceFailed
_REPORTED_KINDS = {getattr(pb_utils.TritonError, name): name
                   for name in ("UNKNOWN", "NOT_FOUND", "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED")}
# (inputs, wanted outputs), or (inputs, wanted outputs, a decoupled model's ResponseStream or None, the client's
# parameters or None)
Request = tuple[Any, ...]


def triton_model_config(config: ModelConfig) -> dict[str, Any]:
    """The config as Triton hands it to `initialize` (args["model_config"], JSON): what models look up with
    get_input_config_by_name / get_output_config_by_name and triton_string_to_numpy."""

    def tensor(t: Any) -> dict[str, Any]:
        data_type = "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}"
        out = {"name": t.name, "data_type": data_type, "dims": list(t.dims)}
        if t.optional:
            out["optional"] = True
        return out

    out: dict[str, Any] = {
        "name": config.name, "backend": "python", "platform": "", "max_batch_size": config.max_batch_size,
        "input": [tensor(t) for t in config.inputs], "output": [tensor(t) for t in config.outputs],
        "instance_group": [{"name": f"{config.name}_{i}", "kind": g.kind, "count": g.count, "gpus": list(g.gpus)}
                           for i, g in enumerate(config.instance_group)]
        or [{"name": config.name, "kind": "KIND_CPU", "count": config.instance_count}],
        "parameters": {k: {"string_value": v} for k, v in config.parameters.items()},
        "model_transaction_policy": {"decoupled": config.decoupled},
    }
    if config.dynamic_batching is not None and config.batching:
        db = config.dynamic_batching
        out["dynamic_batching"] = {"max_queue_delay_microseconds": db.max_queue_delay_us,
                                   "preferred_batch_size": list(db.preferred_batch_sizes)}
    return out


def _nvml_inventory() -> GpuInventory:
    """A python model uses whatever library it likes on its GPU: count what CUDA/NVML say the process sees."""
    from twinfer.inference.nvml import cuda_device_count

    count = cuda_device_count()
    if count:
        return GpuInventory(True, count)
    return GpuInventory(False, 0, "a GPU this process sees (none through NVML, nvidia-ml-py in the `gpu` extra, "
                                  "or CUDA_VISIBLE_DEVICES)")


class PythonBackend:
    warms_up = False  # zeros through user code prove nothing and may not be valid input for it

    def __init__(self, config: ModelConfig, model_file: Path, options: BackendOptions) -> None:
        self.name = config.name
        self._config = config
        self._caller = options.caller
        self._output_names = [t.name for t in config.outputs]
        if "EXECUTION_ENV_PATH" in config.parameters:
            _log.warn("model {name}: EXECUTION_ENV_PATH is ignored; the model runs with the server's packages",
                      name=config.name)
        module = import_model_file(config.name, model_file)
        self._module = module
        self._package = module.__name__.rpartition(".")[0]
        cls = getattr(module, "TritonPythonModel", None)
        if not inspect.isclass(cls) or not callable(getattr(cls, "execute", None)):
            self._forget_module()
            raise ModelLoadError(f"model {config.name!r}: {model_file} defines no class TritonPythonModel "
                                 "with an execute(self, requests) method")
        args = {
            "model_config": json.dumps(triton_model_config(config)),
            "model_name": config.name,
            "model_version": model_file.parent.name,
            "model_repository": str(model_file.parent.parent),
        }
        # Triton tells each instance its kind and device; the model moves its own work there (e.g. torch on cuda:N).
        placement = place_instances(config, _nvml_inventory)
        for note in placement.notes:
            _log.info("{note}", note=note)
        self.instance_count = len(placement.devices)
        self._instances: list[Any] = []
        self._instance_names: dict[int, str] = {}  # id(instance) -> Triton's instance name, for error messages
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loops = threading.local()
        self._logged: set[str] = set()
        try:
            for i, device in enumerate(placement.devices):
                instance, instance_name = cls(), f"{config.name}_0_{i}"
                initialize = getattr(instance, "initialize", None)
                if initialize is not None:
                    with pb_utils.bound_caller(self._caller), helpers_of(model_file.parent, self._package):
                        self._await(initialize({**args, "model_instance_name": instance_name,
                                                "model_instance_kind": "GPU" if device.is_gpu else "CPU",
                                                "model_instance_device_id": str(device.index)}))
                self._instances.append(instance)  # finalize is owed only to instances that initialized
                self._instance_names[id(instance)] = instance_name
                self._idle.put(instance)
        except MODEL_CODE_ERRORS as exc:
            self.close()
            raise ModelLoadError(f"model {config.name!r}: initialize failed: {type(exc).__name__}: {exc}") \
                from exc

    def _await(self, result: Any) -> Any:
        """Triton allows `async def` initialize/execute/finalize: run them on this thread's own event loop."""
        if not inspect.isawaitable(result):
            return result
        loop = getattr(self._loops, "loop", None)
        if loop is None:
            loop = self._loops.loop = asyncio.new_event_loop()
        return loop.run_until_complete(result)

    def run_requests(self, requests: list[Request]) -> list[dict[str, np.ndarray] | Exception]:
        """One `execute` call for the batch; one result per request. Blocking: on an instance thread."""
        if self._config.decoupled:
            return self._run_decoupled(requests)
        wrapped = [self._wrapped(request) for request in requests]
        for one in wrapped:
            one._default_mode = True
        responses, failed = self._call_execute(wrapped)
        if failed is not None:
            return self._all_failed(requests, failed)
        if responses is None:  # answered through the response senders (Triton 24.06's default mode)
            responses = self._sent_responses(wrapped)
        if not isinstance(responses, (list, tuple)) or len(responses) != len(requests):
            count = len(responses) if isinstance(responses, (list, tuple)) else type(responses).__name__
            return self._all_failed(requests, f"model {self.name!r}: execute returned {count} responses for "
                                              f"{len(requests)} requests")
        results: list[dict[str, np.ndarray] | Exception] = []
        for response, (_, outputs, *_) in zip(responses, requests):
            if isinstance(response, TwinferError):  # a request the senders left unanswered
                results.append(response)
                continue
            try:
                results.append(self._outputs_of(response, outputs))
            except Exception as exc:  # noqa: BLE001 - a malformed response (not Tensors...) fails its request only
                results.append(InferenceFailed(f"model {self.name!r}: unusable response: {type(exc).__name__}: "
                                               f"{exc}"))
        return results

    def _run_decoupled(self, requests: list[Request]) -> list[dict[str, np.ndarray] | Exception]:
        """`execute` with a response sender on each request; its responses go to the requests' streams, during
        and after the call. The batcher's results are empty: the streams carry everything."""
        streams: list[ResponseStream] = []
        wrapped = []
        for request in requests:
            stream = request[2] if len(request) > 2 else None
            if stream is None:
                raise InvalidInput(f"model {self.name!r} is decoupled: it answers on a response stream only")
            streams.append(stream)
            one = self._wrapped(request)
            one._sender = pb_utils.ResponseSender(stream, self._item_converter(request[1]))
            wrapped.append(one)
        returned, failed = self._call_execute(wrapped)
        if failed is not None:
            return self._end_streams(streams, failed)
        if returned is not None:
            return self._end_streams(streams, f"model {self.name!r} is decoupled: execute must return None and "
                                              "send its responses with request.get_response_sender()")
        return [{} for _ in requests]

    def _call_execute(self, wrapped: list[Any]) -> tuple[Any, str | None]:
        """`execute` on an idle instance: (what it returned, None), or (None, Triton's message for what it raised:
        user code, so it fails this call's requests and the server keeps serving)."""
        instance = self._idle.get()  # the batcher runs at most instance_count batches, so one is always idle
        try:
            with pb_utils.bound_caller(self._caller):
                return self._await(instance.execute(wrapped)), None
        except MODEL_CODE_ERRORS as exc:  # noqa: BLE001
            if not isinstance(exc, pb_utils.TritonModelException):
                self._log_first(exc)
            return None, self._execute_failed(instance, exc)
        finally:
            self._idle.put(instance)

    def _sent_responses(self, wrapped: list[Any]) -> list[Any]:
        """The one response each request's sender got; waits up to SENT_RESPONSE_WAIT_S for final flags still to
        come from threads the model started. A request nothing was sent for fails with the reason."""
        deadline = time.monotonic() + SENT_RESPONSE_WAIT_S
        out: list[Any] = []
        for request in wrapped:
            sender = request._sender
            if sender is None:
                out.append(InferenceFailed(f"model {self.name!r}: execute returned None and sent no response for "
                                           "this request (return a list of responses, or send one with "
                                           "request.get_response_sender())"))
            elif not sender.wait(max(0.0, deadline - time.monotonic())):
                out.append(InferenceFailed(f"model {self.name!r}: no final flag for this request within "
                                           f"{SENT_RESPONSE_WAIT_S:g} s of execute returning"))
            elif sender.response is None:
                out.append(InferenceFailed(f"model {self.name!r}: the final flag came without a response"))
            else:
                out.append(sender.response)
        return out

    def _execute_failed(self, instance: Any, exc: BaseException) -> str:
        """Triton's message for an execute that raised (pb_stub.cc), naming the instance."""
        name = self._instance_names.get(id(instance), self.name)
        return f"Failed to process the request(s) for model '{name}', message: {type(exc).__name__}: {exc}"

    def _wrapped(self, request: Request) -> Any:
        """One queued request as `execute` sees it: pb_utils.InferenceRequest, with the client's parameters."""
        inputs, outputs = request[0], request[1]
        parameters = request[3] if len(request) > 3 else None
        return pb_utils.InferenceRequest(
            model_name=self.name, requested_output_names=outputs, parameters=parameters or {},
            inputs=[pb_utils.Tensor._of_request(n, a) for n, a in inputs.items()])

    def _end_streams(self, streams: list[ResponseStream], message: str) -> list[dict[str, np.ndarray] | Exception]:
        for stream in streams:
            stream.fail(InferenceFailed(message))
        return [{} for _ in streams]

    def _item_converter(self, wanted: list[str]):
        """A decoupled response -> StreamItem: its error (that response fails, the stream goes on), or the outputs
        the request asked for among those it carries (a response may carry some outputs only)."""

        def convert(response: Any, final: bool) -> StreamItem:
            if not isinstance(response, pb_utils.InferenceResponse):
                raise pb_utils.TritonModelException(f"Unable to send response: expected an InferenceResponse, got "
                                                    f"{type(response).__name__}")
            if response.has_error():
                return StreamItem(error=self._error_of(response), final=final)
            produced = {t.name(): t.as_numpy() for t in response.output_tensors()}
            return StreamItem(outputs={n: a for n, a in produced.items() if not wanted or n in wanted}, final=final,
                              parameters=response._parameters or None)

        return convert

    def _log_first(self, exc: Exception) -> None:
        """The traceback of the first exception of each type goes to the log (later ones only to the client), so
        a model failing on every request cannot flood it."""
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            args = ("model {name}: execute raised {kind} (logged once per exception type)",
                    Failure(exc, type(exc), exc.__traceback__))
            reactor = self._caller.reactor if self._caller is not None else None
            if reactor is not None and getattr(reactor, "running", False):
                reactor.callFromThread(_log.failure, *args, name=self.name, kind=kind)
            else:
                _log.failure(*args, name=self.name, kind=kind)

    def _all_failed(self, requests: list[Request], message: str) -> list[dict[str, np.ndarray] | Exception]:
        return [InferenceFailed(message) for _ in requests]

    def _outputs_of(self, response: Any, wanted: list[str]) -> dict[str, np.ndarray] | Exception:
        if not isinstance(response, pb_utils.InferenceResponse):
            return InferenceFailed(f"model {self.name!r}: execute returned {type(response).__name__}, "
                                   "not an InferenceResponse")
        if response.has_error():
            return self._error_of(response)
        produced = {t.name(): t.as_numpy() for t in response.output_tensors()}
        missing = [name for name in wanted if name not in produced]
        if missing:
            return InferenceFailed(f"model {self.name!r} returned no output {missing[0]!r} "
                                   f"(it returned {', '.join(produced) or 'none'})")
        return Outputs({name: produced[name] for name in wanted}, response._parameters or None)

    @staticmethod
    def _error_of(response: Any) -> TwinferError:
        """A response's TritonError: the model's own message, as Triton returns it, typed by its code."""
        error = response.error()
        message, code = error.message(), error.code()
        if code == pb_utils.TritonError.INVALID_ARG:
            return InvalidInput(message)
        if code == pb_utils.TritonError.UNAVAILABLE:
            return Unavailable(message)
        if code in _REPORTED_KINDS:
            return ModelReportedError(message, _REPORTED_KINDS[code])
        return InferenceFailed(message)

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """One request alone (the validation gate, `twinfer validate`)."""
        if self._config.decoupled:
            raise InvalidInput(f"model {self.name!r} is decoupled: it answers on a response stream only (gRPC "
                               "ModelStreamInfer), not with one result")
        (result,) = self.run_requests([(inputs, outputs or self._output_names)])
        if isinstance(result, TwinferError):
            raise result
        return result

    def close(self) -> None:
        """Call every instance's finalize (errors there are the model's, and must not stop the unload)."""
        for instance in self._instances:
            finalize = getattr(instance, "finalize", None)
            if finalize is not None:
                try:
                    with pb_utils.bound_caller(self._caller):
                        self._await(finalize())
                except MODEL_CODE_ERRORS as exc:  # noqa: BLE001
                    pb_utils.Logger.log_error(f"model {self.name!r}: finalize raised {type(exc).__name__}: {exc}")
        self._instances = []
        loop = getattr(self._loops, "loop", None)
        if loop is not None:
            loop.close()
        self._forget_module()

    def _forget_module(self) -> None:
        forget_model_module(self._module)


def auto_complete(partial: dict[str, Any], model_file: Path) -> dict[str, Any]:
    """Triton's `auto_complete_config`: when model.py defines it, let it fill in the configuration (a partial
    config dict as config_loading merges them, returned completed). Runs the model file's module code, as Triton
    does at load; ModelLoadError/ValueError when the model's additions contradict the configuration."""
    name = partial["name"]
    module = import_model_file(name, model_file)
    try:
        cls = getattr(module, "TritonPythonModel", None)
        hook = getattr(cls, "auto_complete_config", None)
        if hook is None:
            return partial

        def triton_tensor(t: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {"name": t["name"]}
            if "datatype" in t:
                out["data_type"] = "TYPE_STRING" if t["datatype"] == "BYTES" else f"TYPE_{t['datatype']}"
            if "dims" in t:
                out["dims"] = list(t["dims"])
            if t.get("optional"):
                out["optional"] = True
            return out

        triton = {"name": name, "backend": "python", "max_batch_size": partial.get("max_batch_size", 0),
                  "input": [triton_tensor(t) for t in partial.get("inputs", [])],
                  "output": [triton_tensor(t) for t in partial.get("outputs", [])]}
        if partial.get("dynamic_batching") is not None:
            triton["dynamic_batching"] = {}
        if (partial.get("model_transaction_policy") or {}).get("decoupled"):
            triton["model_transaction_policy"] = {"decoupled": True}
        with helpers_of(model_file.parent, module.__name__.rpartition(".")[0]):
            completed = hook(pb_utils.ModelConfig(triton))
        result = (completed if completed is not None else pb_utils.ModelConfig(triton)).as_dict()
    finally:
        forget_model_module(module)

    def twinfer_tensor(t: dict[str, Any], kind: str) -> dict[str, Any]:
        before = next((p for p in partial.get(kind, []) if p["name"] == t["name"]), {})  # keeps labels
        datatype = str(t.get("data_type", "TYPE_INVALID")).removeprefix("TYPE_")
        out: dict[str, Any] = {**before, "name": t["name"]}
        if t.get("dims"):
            out["dims"] = [int(d) for d in t["dims"]]
        if datatype != "INVALID":
            out["datatype"] = "BYTES" if datatype == "STRING" else datatype
        if t.get("optional"):
            out["optional"] = True
        return out

    done = dict(partial)
    done["max_batch_size"] = int(result.get("max_batch_size", 0))
    done["inputs"] = [twinfer_tensor(t, "inputs") for t in result.get("input", [])]
    done["outputs"] = [twinfer_tensor(t, "outputs") for t in result.get("output", [])]
    if "dynamic_batching" in result and done.get("dynamic_batching") is None:
        done["dynamic_batching"] = {}
    if (result.get("model_transaction_policy") or {}).get("decoupled"):
        done["model_transaction_policy"] = {"decoupled": True}
    return done
