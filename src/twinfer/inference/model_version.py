"""One loaded version of a model: its backend, its instance threads, its batcher and its statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twinfer.backends import Backend, BackendOptions, load_backend
from twinfer.backends.base import RequestListBackend
from twinfer.errors import ModelLoadError
from twinfer.inference.batcher import DynamicBatcher, Outputs
from twinfer.inference.datatypes import to_numpy_dtype
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.statistics import ModelStatistics
from twinfer.inference.threads import ThreadRunner

_log = Logger()
HUNG_GRACE_S = 30.0  # how long an unload waits for a python model's execute that does not return


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What tells a changed file from the one loaded: path, size and modification time."""

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileSignature:
        """A directory (a SavedModel) is summed over its files, so a change anywhere inside it counts."""
        if path.is_dir():
            stats = [p.stat() for p in path.rglob("*") if p.is_file()]
            return cls(path, sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0))
        st = path.stat()
        return cls(path, st.st_size, st.st_mtime_ns)

    @classmethod
    def of_python_model(cls, model_py: Path) -> FileSignature:
        """model.py and the helper files beside it (a changed `utils.py` reloads the model too); the bytecode
        Python writes there on import does not count, or every load would look like a change."""
        stats = [p.stat() for p in model_py.parent.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")]
        return cls(model_py, sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0))


def warmup_inputs(config: ModelConfig) -> dict[str, np.ndarray]:
    """Zeros of the smallest valid shape for every input (batch 1, -1 dims as 1)."""
    inputs = {}
    for spec in config.inputs:
        shape = [1 if d == -1 else d for d in config.full_shape(spec)]
        inputs[spec.name] = np.zeros(shape, dtype=to_numpy_dtype(spec.datatype))
    return inputs


def load_and_warm(config: ModelConfig, model_file: Path, options: BackendOptions) -> Backend:
    """Load a version and run it once; a version that cannot run never takes traffic. Blocking.

    `model_file` is the version's file found first; when the directory holds several formats, the one the
    config's backend loads is used instead."""
    from twinfer.inference.config_loading import find_model_file

    model_file = find_model_file(model_file.parent, config.backend) or model_file
    backend = load_backend(config, model_file, options)
    if config.warmup and getattr(backend, "warms_up", True):  # python models and ensembles: no zeros through user code
        outputs = [t.name for t in config.outputs]
        try:
            backend.run(warmup_inputs(config), outputs)
        except Exception as exc:
            backend.close()
            raise ModelLoadError(f"model {config.name!r}: warm-up failed on {model_file}: {exc}") from exc
    if config.validation is not None:
        from twinfer.inference.validation_gate import validate

        try:
            report = validate(config, backend, model_file.parent.parent)
        except ModelLoadError:
            backend.close()
            raise
        except Exception as exc:  # a dataset that does not fit the model
            backend.close()
            raise ModelLoadError(f"model {config.name!r}: validation could not run: {exc}") from exc
        if not report.passed:
            backend.close()
            raise ModelLoadError(f"model {config.name!r} version {model_file.parent.name} refused by its "
                                 f"validation gate: {report.summary()}")
    return backend


def _timed_run_requests(
    backend: RequestListBackend, requests: list[tuple[dict[str, np.ndarray], list[str]]]
) -> tuple[list[Outputs | Exception], int]:
    start = time.perf_counter_ns()
    results = backend.run_requests(requests)
    return results, time.perf_counter_ns() - start


def _timed_run(backend: Backend, inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[Outputs, int]:
    start = time.perf_counter_ns()
    result = backend.run(inputs, outputs)
    return result, time.perf_counter_ns() - start


class ModelVersion:
    def __init__(
        self,
        clock: IReactorTime,
        threads: ThreadRunner,
        config: ModelConfig,
        version: int,
        backend: Backend,
        signature: FileSignature,
    ) -> None:
        self.config = config
        self.version = version
        self.signature = signature
        self.stats = ModelStatistics()
        self._backend = backend
        self._threads = threads
        self._clock = clock
        self._runs_user_code = hasattr(backend, "run_requests")
        self._inline_users = 0  # leases held by callers running this version on their own threads (run_inline)
        self._inline_drained: Deferred[None] | None = None
        self._retiring = False
        own_scheduler = getattr(backend, "scheduler", None)
        if own_scheduler is not None:  # an ensemble: its steps run through the facade, no instance threads
            self._pool = None
            self.batcher = own_scheduler(clock, self.stats)
            return
        # A backend placing instances on devices (instance_group) says how many it made: KIND_GPU without `gpus`
        # is `count` per visible GPU.
        instances = getattr(backend, "instance_count", config.instance_count)
        self._pool = threads.instance_pool(f"{config.name}-v{version}", instances)
        by_request = self._execute_requests if hasattr(backend, "run_requests") else None
        self.batcher = DynamicBatcher(clock, config, self._execute, self.stats, by_request,
                                      getattr(threads, "precise_call_later", None), instances=instances)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def backend(self) -> Backend:
        """The loaded backend (read-only: what a front-end may learn of a version, e.g. a tracker's settings)."""
        return self._backend

    def _execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> Deferred[tuple[Outputs, int]]:
        return self._pool.run(_timed_run, self._backend, inputs, outputs)

    def _execute_requests(
        self, requests: list[tuple[dict[str, np.ndarray], list[str]]]
    ) -> Deferred[tuple[list[Outputs | Exception], int]]:
        return self._pool.run(_timed_run_requests, self._backend, requests)

    # --- inline runs --------------------------------------------------------------------------------------------

    @property
    def runs_inline(self) -> bool:
        """Can a caller run this version on its own worker thread? Only a backend that says it is safe to call
        from any thread (ONNX Runtime sessions; LiteRT with an interpreter per thread), and never user code."""
        return self._pool is not None and not self._runs_user_code and getattr(self._backend, "thread_safe", False)

    def lease(self) -> bool:
        """Reactor thread: hold this version loaded while a worker thread calls `run_inline`; False once it is
        retiring (resolve again). Every True must be matched by one `release`."""
        if self._retiring or not self.runs_inline:
            return False
        self._inline_users += 1
        self.stats.in_flight += 1
        return True

    def run_inline(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[Outputs, int]:
        """Worker thread, under a lease: run the backend now, no queue, no batching. Returns (outputs, compute ns)
        for `release` to record (statistics are kept on the reactor thread)."""
        return _timed_run(self._backend, inputs, outputs)

    def release(self, runs: list[tuple[int, int]], ok: bool) -> None:
        """Reactor thread: end one lease; `runs` = (rows, compute ns) of each `run_inline` it made, each counted
        as one request (no queue: its time is its compute time)."""
        now_ms = int(time.time() * 1000)
        for rows, compute_ns in runs:
            self.stats.record_batch(rows, compute_ns, 1, now_ms)
            (self.stats.success if ok else self.stats.failure).add(compute_ns)
        self.stats.in_flight -= 1
        self._inline_users -= 1
        if self._inline_users == 0 and self._inline_drained is not None:
            d, self._inline_drained = self._inline_drained, None
            d.callback(None)

    def _leases_returned(self) -> Deferred[None]:
        if self._inline_users == 0:
            return succeed(None)
        if self._inline_drained is None:
            self._inline_drained = Deferred()
        return self._inline_drained

    def retire(self) -> Deferred[None]:
        """Refuse new requests, let queued and running ones finish, then free the threads and the backend.

        User code (a python model) may never return: then its version is released after HUNG_GRACE_S all the
        same (its requests have already failed with their timeouts), the stuck threads are left behind (Python
        cannot stop a thread) and an unload or a shutdown still completes."""
        self._retiring = True
        d = self.batcher.drained()
        d.addCallback(lambda _: self._leases_returned())
        if not self._runs_user_code:
            d.addCallback(lambda _: self._threads.run_io(self._release))
            return d
        done: Deferred[None] = Deferred()
        released: list[bool] = []

        def release(wait: bool) -> None:
            if released:
                return
            released.append(True)
            if give_up.active():
                give_up.cancel()
            self._threads.run_io(self._release, wait).chainDeferred(done)

        def hung() -> None:
            _log.warn("model {name} version {v}: execute still running {s:.0f} s after the unload began; releasing "
                      "it anyway", name=self.name, v=self.version, s=HUNG_GRACE_S)
            release(False)

        give_up = self._clock.callLater(HUNG_GRACE_S, hung)
        d.addCallback(lambda _: release(True))
        return done

    def _release(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.stop(wait)
        self._backend.close()
