"""The model repository: a directory of models, kept in step with what is loaded.

Layout: `<root>/<model>/config.yaml | config.pbtxt` and `<root>/<model>/<version>/model.onnx`. A scan (file I/O,
off the reactor) says what is on disk; `_reconcile` makes the served set match it. A new or changed version is
loaded and warmed up in the background and swapped in only once it runs; versions it replaces stop taking new
requests at that instant and unload after their queued and running requests finish. So no request fails because
of a swap, and a broken version never takes traffic: the old one keeps serving.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredLock, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twinfer.backends import BackendOptions
from twinfer.backends.base import canonical_backend
from twinfer.errors import ConfigError, ModelLoadError, ModelNotFound, ModelNotReady
from twinfer.inference.caller import ModelCaller
from twinfer.inference.config_loading import find_model_file, load_model_config
from twinfer.inference.model_config import ModelConfig
from twinfer.inference.model_version import FileSignature, ModelVersion, load_and_warm
from twinfer.inference.threads import ThreadRunner

log = Logger()

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CONFIG_FILES = ("config.yaml", "config.pbtxt")


def valid_model_name(name: str) -> bool:
    """Model names come from URLs and messages: only plain names, never a path."""
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name  # fullmatch: `$` alone lets "name\n" through


@dataclass(frozen=True, slots=True)
class ModelOnDisk:
    """What one scan found for one model directory."""

    name: str
    path: Path
    versions: dict[int, FileSignature]
    config_files: tuple[FileSignature, ...]
    bare_versions: dict[int, FileSignature] = field(default_factory=dict)  # no model file: an ensemble's "1/"


@dataclass(slots=True)
class ServedModel:
    """A model's serving state; `versions` holds only ready versions and is replaced, never mutated in place."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    config: ModelConfig | None = None  # the configuration the serving versions run with
    disk_config: ModelConfig | None = None  # the newest configuration read from disk (new versions load with it)
    config_files: tuple[FileSignature, ...] | None = None
    state: str = "LOADING"  # READY, LOADING, UNAVAILABLE
    reason: str = ""
    explicitly_unloaded: bool = False
    failed: dict[int, FileSignature] = field(default_factory=dict)  # don't retry until the file changes
    lock: DeferredLock = field(default_factory=DeferredLock)


def scan_repository(root: Path) -> dict[str, ModelOnDisk]:
    """Blocking: list models, their version files and config files."""
    found: dict[str, ModelOnDisk] = {}
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a directory")
    for model_dir in sorted(root.iterdir()):
        if model_dir.is_dir() and valid_model_name(model_dir.name):
            found[model_dir.name] = scan_model(model_dir)
    return found


def scan_model(model_dir: Path) -> ModelOnDisk:
    versions, bare = {}, {}
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0:
            model_file = find_model_file(child)
            if model_file is not None:
                versions[int(child.name)] = (FileSignature.of_python_model(model_file) if model_file.name == "model.py"
                                             else FileSignature.of(model_file))
            else:
                bare[int(child.name)] = FileSignature.of(child)
    configs = tuple(FileSignature.of(model_dir / n) for n in CONFIG_FILES if (model_dir / n).is_file())
    return ModelOnDisk(model_dir.name, model_dir, versions, configs, bare)


class ModelRepository:
    def __init__(
        self,
        root: Path,
        clock: IReactorTime,
        threads: ThreadRunner,
        options: BackendOptions = BackendOptions(),
        poll_interval_s: float = 0.0,
    ) -> None:
        self.root = root
        self._clock = clock
        self._threads = threads
        self._options = options
        self._poll_interval_s = poll_interval_s
        self._models: dict[str, ServedModel] = {}
        self._poller: LoopingCall | None = None
        self._poll_lock = DeferredLock()

    def attach_caller(self, infer: Callable) -> None:
        """Let the backends loaded from now on (python models, ensembles) call models through `infer` (the
        facade's), on this repository's reactor."""
        self._options = replace(self._options, caller=ModelCaller(self._clock, infer))

    # --- lifecycle ----------------------------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        """Load everything on disk; then poll for changes when an interval is set."""
        yield self.poll()
        if self._poll_interval_s > 0:
            self._poller = LoopingCall(self._poll_logged)
            self._poller.clock = self._clock
            self._poller.start(self._poll_interval_s, now=False)

    def stop(self) -> Deferred[object]:
        """Stop polling and unload every version once its requests have finished."""
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        retiring = [v.retire() for m in self._models.values() for v in m.versions.values()]
        for model in self._models.values():
            model.versions = {}
            model.state, model.reason = "UNAVAILABLE", "server stopping"
        return gatherResults(retiring, consumeErrors=True)

    def set_poll_interval(self, seconds: float) -> None:
        """Change how often the directory is scanned (0 stops hot reload)."""
        self._poll_interval_s = seconds
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        if seconds > 0:
            self._poller = LoopingCall(self._poll_logged)
            self._poller.clock = self._clock
            self._poller.start(seconds, now=False)

    def _poll_logged(self) -> Deferred[None]:
        d = self.poll()
        d.addErrback(lambda f: log.failure("repository poll failed", f))
        return d

    def poll(self) -> Deferred[None]:
        """One scan of the directory and the loads and unloads it calls for."""
        return self._poll_lock.run(self._poll_once)

    @inlineCallbacks
    def _poll_once(self):
        on_disk = yield self._threads.run_io(scan_repository, self.root)
        work = [self._with_model_lock(name, self._reconcile, entry) for name, entry in on_disk.items()]
        for name in [n for n in self._models if n not in on_disk]:
            work.append(self._with_model_lock(name, self._remove_gone))
        yield gatherResults(work, consumeErrors=True)

    def _with_model_lock(self, name: str, fn, *args) -> Deferred:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = ServedModel(name)
        return model.lock.run(fn, model, *args)

    # --- explicit control (Triton's repository extension) ------------------------------------------------------

    def load(self, name: str) -> Deferred[None]:
        """Load (or reload) one model now, even if it was explicitly unloaded."""
        if not valid_model_name(name) or not (self.root / name).is_dir():
            raise ModelNotFound(f"no model {name!r} in the repository")

        @inlineCallbacks
        def run(model: ServedModel):
            model.explicitly_unloaded = False
            model.failed.clear()
            entry = yield self._threads.run_io(scan_model, self.root / name)
            yield self._reconcile(model, entry, force=True)
            if model.state != "READY":
                raise ModelNotReady(f"model {name!r} failed to load: {model.reason}")

        return self._with_model_lock(name, run)

    def unload(self, name: str) -> Deferred[None]:
        """Stop serving a model (requests in flight finish first); polling won't bring it back until `load`."""
        if name not in self._models:
            raise ModelNotFound(f"no model {name!r} is loaded")

        def run(model: ServedModel) -> Deferred:
            model.explicitly_unloaded = True
            return self._retire_all(model, "unloaded")

        return self._with_model_lock(name, run)

    # --- lookups (reactor thread, cheap) -----------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version that serves a request; ModelNotFound / ModelNotReady otherwise."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model {name!r}")
        versions = model.versions
        if not versions:
            detail = f"{model.state.lower()}: {model.reason}" if model.reason else model.state.lower()
            raise ModelNotReady(f"model {name!r} is not ready ({detail})")
        if not version:
            return versions[max(versions)]
        # isascii: "²".isdigit() is True but int("²") raises; 18 digits: int() of a 5,000-digit string raises too.
        if not (version.isascii() and version.isdigit() and len(version) <= 18) or int(version) not in versions:
            served = ", ".join(str(v) for v in sorted(versions))
            raise ModelNotFound(f"model {name!r} has no version {version!r} being served (served: {served})")
        return versions[int(version)]

    def models(self) -> list[ServedModel]:
        return [self._models[n] for n in sorted(self._models)]

    def model(self, name: str) -> ServedModel:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model {name!r}")
        return model

    def ready(self) -> bool:
        """True once every model that is not explicitly unloaded has a version serving."""
        return all(m.versions or m.explicitly_unloaded for m in self._models.values())

    # --- reconciliation ----------------------------------------------------------------------------------------

    @inlineCallbacks
    def _reconcile(self, model: ServedModel, entry: ModelOnDisk, force: bool = False):
        if model.explicitly_unloaded:
            return
        if force or model.config_files != entry.config_files or model.disk_config is None:
            model.config_files = entry.config_files  # a refused config is read again only once its files change
            sample = entry.versions[max(entry.versions)].path if entry.versions else None
            try:
                model.disk_config = yield self._threads.run_io(load_model_config, entry.path, sample)
            except (ConfigError, ValueError) as exc:
                model.disk_config = None
                self._mark_failed(model, f"bad configuration: {exc}")
                return
        config = model.disk_config
        config_changed = force or config != model.config
        on_disk = ({**entry.bare_versions, **entry.versions} if canonical_backend(config.backend) == "ensemble"
                   else entry.versions)
        wanted = config.version_policy.select(list(on_disk))
        if not wanted:
            self._mark_failed(model, "no version directory with a model file")
            yield self._retire_all(model, "no versions on disk")
            return
        to_load = [
            v for v in wanted
            if config_changed
            or v not in model.versions
            or model.versions[v].signature != on_disk[v]
        ]
        to_load = [v for v in to_load if model.failed.get(v) != on_disk[v] or force]
        if not to_load and set(model.versions) == set(wanted):
            return
        if not model.versions:
            model.state = "LOADING"
        loaded: dict[int, ModelVersion] = {}
        for v in to_load:
            signature = on_disk[v]
            try:
                backend = yield self._threads.run_io(load_and_warm, config, signature.path, self._options)
            except (ModelLoadError, ConfigError) as exc:
                model.failed[v] = signature
                log.error("model {name} version {v} refused: {exc}", name=model.name, v=v, exc=exc)
                model.reason = str(exc)
                continue
            loaded[v] = ModelVersion(self._clock, self._threads, config, v, backend, signature)
            model.failed.pop(v, None)
            log.info("model {name} version {v} loaded and warmed up", name=model.name, v=v)
        self._swap(model, config, config_changed, wanted, loaded)

    def _swap(
        self, model: ServedModel, config: ModelConfig, config_changed: bool, wanted: list[int],
        loaded: dict[int, ModelVersion],
    ) -> None:
        """Install the new versions in one assignment; retire what they replace, only if something will serve."""
        keep = {v: mv for v, mv in model.versions.items() if v in wanted and v not in loaded}
        if config_changed and loaded:
            keep = {}  # every version runs with the new configuration or not at all
        new_versions = {**keep, **loaded}
        if not new_versions:
            self._mark_failed(model, model.reason or "no version could be loaded")
            return
        old = model.versions
        model.versions = new_versions
        if loaded:
            model.config = config
        model.state, model.reason = "READY", ""
        for v, mv in old.items():
            if new_versions.get(v) is not mv:
                log.info("model {name} version {v} draining", name=model.name, v=v)
                mv.retire().addErrback(lambda f: log.failure("unload failed", f))

    def _mark_failed(self, model: ServedModel, reason: str) -> None:
        model.reason = reason
        if not model.versions:
            model.state = "UNAVAILABLE"
        log.error("model {name}: {reason}", name=model.name, reason=reason)

    def _retire_all(self, model: ServedModel, reason: str) -> Deferred:
        old, model.versions = model.versions, {}
        model.state, model.reason = "UNAVAILABLE", reason
        return gatherResults([mv.retire() for mv in old.values()], consumeErrors=True)

    @inlineCallbacks
    def _remove_gone(self, model: ServedModel):
        yield self._retire_all(model, "removed from the repository")
        if self._models.get(model.name) is model:
            del self._models[model.name]
