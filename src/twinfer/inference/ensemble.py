"""Ensembles (Triton's `platform: "ensemble"`): a graph of other repository models, run through the facade.

Each step is an ordinary request to its model, so it is validated, batched with that model's other traffic, times
out and counts in that model's statistics; a step starts as soon as every tensor it reads exists (independent steps
run at once). Nothing here blocks: the scheduler lives on the reactor and only chains Deferreds, so an ensemble has
no instance threads of its own. A step resolves its model version when it starts, so a step model's hot reload
swaps under a running ensemble without failing it (the repository drains the old version). An ensemble is ready
only while every step model is (`InferenceFacade` checks `depends_on`).
"""

from __future__ import annotations

import time

import numpy as np
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from twinfer.backends.base import BackendOptions
from twinfer.errors import InferenceFailed, ModelLoadError, TwinferError, Unavailable
from twinfer.inference.caller import ModelCaller
from twinfer.inference.model_config import EnsembleStep, ModelConfig
from twinfer.inference.statistics import ModelStatistics
from twinfer.inference.types import InferenceRequest, InferenceResult

Outputs = dict[str, np.ndarray]


def check_graph(config: ModelConfig) -> None:
    """Every step reads tensors that exist, every ensemble output is written once, and the steps form no cycle
    (ModelLoadError naming the step otherwise); Triton refuses the same configs."""
    assert config.ensemble_scheduling is not None
    steps = config.ensemble_scheduling.step
    writers: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.model_name == config.name:
            raise ModelLoadError(f"ensemble {config.name!r}: step {i} calls the ensemble itself")
        if not step.output_map:
            raise ModelLoadError(f"ensemble {config.name!r}: step {i} ({step.model_name}) has no output_map")
        for tensor in step.output_map.values():
            if tensor in writers or config.input(tensor) is not None:
                raise ModelLoadError(f"ensemble {config.name!r}: tensor {tensor!r} is written twice "
                                     f"(step {i}, {step.model_name})")
            writers[tensor] = i
    for i, step in enumerate(steps):
        for step_input, tensor in step.input_map.items():
            if tensor not in writers and config.input(tensor) is None:
                raise ModelLoadError(f"ensemble {config.name!r}: step {i} ({step.model_name}) input {step_input!r} "
                                     f"reads {tensor!r}, which is neither an ensemble input nor a step output")
    for output in config.outputs:
        if output.name not in writers:
            raise ModelLoadError(f"ensemble {config.name!r}: no step writes the output {output.name!r}")
    available = {t.name for t in config.inputs}
    pending = list(range(len(steps)))
    while pending:
        ready = [i for i in pending if set(steps[i].input_map.values()) <= available]
        if not ready:
            names = ", ".join(steps[i].model_name for i in pending)
            raise ModelLoadError(f"ensemble {config.name!r}: steps {names} wait on each other (a cycle)")
        for i in ready:
            pending.remove(i)
            available.update(steps[i].output_map.values())


def _version_of(step: EnsembleStep) -> str | None:
    return str(step.model_version) if step.model_version > 0 else None


class EnsembleBackend:
    """What the repository loads for an ensemble version: the checked graph and a way to call its steps."""

    warms_up = False

    def __init__(self, config: ModelConfig, options: BackendOptions) -> None:
        if options.caller is None:
            raise ModelLoadError(f"ensemble {config.name!r}: this repository has no facade to run steps through")
        check_graph(config)
        self.config = config
        self.caller = options.caller
        assert config.ensemble_scheduling is not None
        self.steps = config.ensemble_scheduling.step
        self.depends_on: tuple[tuple[str, str | None], ...] = tuple(
            dict.fromkeys((s.model_name, _version_of(s)) for s in self.steps))

    def scheduler(self, clock: IReactorTime, stats: ModelStatistics) -> EnsembleScheduler:
        return EnsembleScheduler(clock, self.config, self.steps, self.caller, stats)

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise InferenceFailed(f"ensemble {self.config.name!r} runs only inside a server (its steps are models)")

    def close(self) -> None:
        pass


class _Run:
    """One ensemble request in progress: the tensors so far, the steps not started yet, the steps running."""

    __slots__ = ("tensors", "waiting", "running", "deferred", "outputs", "timeout_ms", "failed", "started_at",
                 "parameters")

    def __init__(self, inputs: Outputs, steps: int, outputs: list[str], timeout_ms: int | None, now: float,
                 parameters: dict | None = None) -> None:
        self.parameters = parameters  # the client's, handed to every step (as Triton's ensembles do)
        self.tensors = dict(inputs)
        self.waiting = list(range(steps))
        self.running = 0
        self.deferred: Deferred[Outputs] = Deferred()
        self.outputs = outputs
        self.timeout_ms = timeout_ms
        self.failed = False
        self.started_at = now


class EnsembleScheduler:
    """The ensemble's stand-in for a DynamicBatcher (`submit`, `drained`, `queued`, `busy`): no queue of its
    own, the step models queue and batch."""

    def __init__(self, clock: IReactorTime, config: ModelConfig, steps: tuple[EnsembleStep, ...],
                 caller: ModelCaller, stats: ModelStatistics) -> None:
        self._clock = clock
        self._config = config
        self._steps = steps
        self._caller = caller
        self._stats = stats
        self._active = 0
        self._closed = False
        self._drain_waiters: list[Deferred[None]] = []

    @property
    def queued(self) -> int:
        return 0

    @property
    def busy(self) -> int:
        return self._active

    def submit(self, inputs: Outputs, outputs: list[str], timeout_s: float | None = None, stream: object = None,
               parameters: dict | None = None) -> Deferred[Outputs]:
        if self._closed:
            return fail(Unavailable("model version is unloading"))
        run = _Run(inputs, len(self._steps), outputs, int(timeout_s * 1e3) if timeout_s else None,
                   self._clock.seconds(), parameters)
        self._active += 1
        self._stats.in_flight += 1
        self._advance(run)
        return run.deferred

    def drained(self) -> Deferred[None]:
        self._closed = True
        if not self._active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d

    def _advance(self, run: _Run) -> None:
        for i in [i for i in run.waiting if set(self._steps[i].input_map.values()) <= run.tensors.keys()]:
            run.waiting.remove(i)
            self._start(run, i)
        if not run.waiting and not run.running and not run.failed:
            self._finish(run, {name: run.tensors[name] for name in run.outputs})

    def _start(self, run: _Run, index: int) -> None:
        step = self._steps[index]
        request = InferenceRequest(
            model=step.model_name,
            inputs={step_input: run.tensors[tensor] for step_input, tensor in step.input_map.items()},
            version=_version_of(step),
            outputs=list(step.output_map),
            timeout_ms=run.timeout_ms,
            parameters=run.parameters,
        )
        run.running += 1
        try:
            d = self._caller.infer(request)
        except Exception:  # noqa: BLE001 - the facade reports through the Deferred; be safe all the same
            d = fail(Failure())
        d.addCallbacks(self._step_done, self._step_failed, callbackArgs=(run, index), errbackArgs=(run, index))

    def _step_done(self, result: InferenceResult, run: _Run, index: int) -> None:
        run.running -= 1
        if run.failed:
            return
        for step_output, tensor in self._steps[index].output_map.items():
            run.tensors[tensor] = result.outputs[step_output]
        self._advance(run)

    def _step_failed(self, failure: Failure, run: _Run, index: int) -> None:
        run.running -= 1
        if run.failed:
            return
        run.failed = True
        step = self._steps[index]
        error = failure.value
        kind = type(error) if isinstance(error, TwinferError) else InferenceFailed
        message = error.message if isinstance(error, TwinferError) else str(error)
        self._finish(run, Failure(kind(f"ensemble {self._config.name!r} step {index} "
                                       f"({step.model_name}): {message}")))

    def _finish(self, run: _Run, result: Outputs | Failure) -> None:
        self._active -= 1
        self._stats.in_flight -= 1
        ok = not isinstance(result, Failure)
        elapsed = int((self._clock.seconds() - run.started_at) * 1e9)
        (self._stats.success if ok else self._stats.failure).add(elapsed)
        if ok:
            first = next(iter(run.tensors.values()), None)
            rows = first.shape[0] if self._config.batching and first is not None and first.ndim else 1
            self._stats.record_batch(rows, elapsed, 1, int(time.time() * 1000))
            run.deferred.callback(result)
        else:
            run.deferred.errback(result)
        if self._drain_waiters and not self._active:
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                d.callback(None)

