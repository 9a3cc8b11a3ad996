"""The inference facade: the one door every front-end uses to reach a model.

TCP commands, UDP streams, HTTP and gRPC handlers all call `infer` with an InferenceRequest, so validation,
batching, queue limits, timeouts and statistics behave the same whatever the transport. Runs on the reactor thread
and returns Deferreds; the models themselves run on their instance threads.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.python.failure import Failure

from twinfer.errors import InferenceFailed, InvalidInput, ModelNotFound, ModelNotReady, TwinferError
from twinfer.inference.limits import DEFAULT_MAX_ELEMENTS, ElementBudget
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.model_version import ModelVersion
from twinfer.inference.repository import ModelRepository, ServedModel
from twinfer.inference.response_stream import ResponseStream
from twinfer.inference.types import InferenceRequest, InferenceResult
from twinfer.inference.validation import validate_inputs, validate_outputs


class InferenceFacade:
    def __init__(self, repository: ModelRepository, max_request_elements: int = DEFAULT_MAX_ELEMENTS,
                 readiness: str = "strict") -> None:
        self.repository = repository
        self.max_request_elements = max_request_elements
        self.readiness = readiness  # "strict" (every model) or "any" (one serving model); settings.readiness
        repository.attach_caller(self)  # python models' BLS calls and ensemble steps come back in here

    def element_budget(self) -> ElementBudget:
        """A fresh per-request budget: every front-end's decoder takes one before it allocates any input."""
        return ElementBudget(self.max_request_elements)

    def infer(self, request: InferenceRequest, streaming: bool = False) -> Deferred[InferenceResult]:
        """Validate, queue and run one request. Errors arrive as TwinferError failures, never raised.

        A decoupled model answers with a stream of responses, which only a `streaming` caller (gRPC
        ModelStreamInfer) can relay: its result comes at once, before the request runs, with `stream` set; errors
        from then on (a queue timeout, a failing execute) end that stream."""
        try:
            version = self.resolve(request.model, request.version)
            config = version.config
            if config.decoupled and not streaming:
                raise InvalidInput(f"model {config.name!r} is decoupled (it sends several responses per request): "
                                   "call it with gRPC ModelStreamInfer (tritonclient's stream_infer)")
            inputs = validate_inputs(config, request.inputs)
            outputs = validate_outputs(config, request.outputs)
            timeout_s = request.timeout_ms / 1e3 if request.timeout_ms else None
            if config.decoupled:
                return succeed(self._submit_decoupled(version, inputs, outputs, timeout_s, request.parameters))
            d = version.batcher.submit(inputs, outputs, timeout_s, parameters=request.parameters)
        except TwinferError as exc:
            return fail(exc)
        name, number = config.name, str(version.version)
        return d.addCallback(lambda out: InferenceResult(name, number, out, parameters=getattr(out, "parameters",
                                                                                               None)))

    def _submit_decoupled(self, version: ModelVersion, inputs: dict, outputs: list[str], timeout_s: float | None,
                          parameters: dict | None) -> InferenceResult:
        stream = ResponseStream(getattr(self.repository.reactor, "callFromThread", None))
        d = version.batcher.submit(inputs, outputs, timeout_s, stream=stream, parameters=parameters)

        def failed(failure: Failure) -> None:
            error = failure.value
            stream.fail(error if isinstance(error, TwinferError) else InferenceFailed(f"model execution failed: "
                                                                                       f"{error}"))

        d.addErrback(failed)
        return InferenceResult(version.config.name, str(version.version), stream=stream)

    def resolve(self, model: str, version: str | None = None) -> ModelVersion:
        """The version a request for (model, version) would use; raises ModelNotFound / ModelNotReady. An ensemble
        is ready only while every model its steps call is."""
        served = self.repository.get(model, version)
        depends_on = getattr(served.backend, "depends_on", None)
        if depends_on:
            self._check_steps(model, depends_on, {model})
        return served

    def _check_steps(self, ensemble: str, depends_on: tuple[tuple[str, str | None], ...], seen: set[str]) -> None:
        for step_model, step_version in depends_on:
            try:
                served = self.repository.get(step_model, step_version)
            except (ModelNotFound, ModelNotReady) as exc:
                raise ModelNotReady(f"ensemble {ensemble!r} is not ready: step model {step_model!r}: "
                                    f"{exc.message}") from None
            nested = getattr(served.backend, "depends_on", None)
            if nested and step_model not in seen:
                self._check_steps(ensemble, nested, seen | {step_model})

    def config(self, model: str, version: str | None = None) -> ModelConfig:
        return self.resolve(model, version).config

    def models(self) -> list[ServedModel]:
        return [self._as_listed(m) for m in self.repository.models()]

    def model(self, name: str) -> ServedModel:
        return self._as_listed(self.repository.model(name))

    def _as_listed(self, model: ServedModel) -> ServedModel:
        """An ensemble whose steps are not all ready is listed UNAVAILABLE with the reason (a copy: the
        repository's own state stays what was loaded)."""
        if not model.versions:
            return model
        newest = model.versions[max(model.versions)]
        depends_on = getattr(newest.backend, "depends_on", None)
        if not depends_on:
            return model
        try:
            self._check_steps(model.name, depends_on, {model.name})
        except ModelNotReady as exc:
            return replace(model, versions={}, state="UNAVAILABLE", reason=exc.message)
        return model

    def versions_for_statistics(self, name: str | None, version: str | None) -> list[ModelVersion]:
        """Serving versions of one model (or of all models, when name is empty)."""
        if not name:
            return [mv for m in self.repository.models() for _, mv in sorted(m.versions.items())]
        if version:
            return [self.repository.get(name, version)]
        return [mv for _, mv in sorted(self.repository.model(name).versions.items())]

    def load(self, name: str) -> Deferred[None]:
        return maybeDeferred(self.repository.load, name)

    def unload(self, name: str) -> Deferred[None]:
        return maybeDeferred(self.repository.unload, name)

    def ready(self) -> bool:
        """The server's readiness: Triton's strict rule, or (`any`) ready while at least one model serves, so one
        broken model does not take a whole Kubernetes deployment out of service."""
        if self.readiness == "strict":
            return self.repository.ready()
        return any(m.versions for m in self.repository.models())
