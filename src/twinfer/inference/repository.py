"""The model repository: a directory of models, kept in step with what is loaded.

Layout: `<root>/<model>/config.yaml | config.pbtxt` and `<root>/<model>/<version>/model.onnx`. A scan (file I/O,
off the reactor) says what is on disk; `_reconcile` makes the served set match it. A new or changed version is
loaded and warmed up in the background and swapped in only once it runs; versions it replaces stop taking new
requests at that instant and unload after their queued and running requests finish. So no request fails because
of a swap, and a broken version never takes traffic: the old one keeps serving.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twinfer.backends import BackendOptions
from twinfer.backends.base import canonical_backend
from twinfer.errors import ConfigError, InvalidInput, ModelLoadError, ModelNotFound, ModelNotReady
from twinfer.gc_policy import freeze_long_lived
from twinfer.inference.caller import ModelCaller
from twinfer.inference.config_loading import find_model_file, load_model_config
from twinfer.inference.model_config import ModelConfig, VersionPolicy
from twinfer.inference.model_version import FileSignature, ModelVersion, load_and_warm
from twinfer.inference.threads import ThreadRunner

log = Logger()

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # fullmatch: `$` matches before a final \n
CONFIG_FILES = ("config.yaml", "config.pbtxt")


def valid_model_name(name: str) -> bool:
    """Model names come from URLs and messages: only plain names, never a path."""
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name  # fullmatch: `$` alone lets "name\n" through


@dataclass(frozen=True, slots=True)
class ModelOnDisk:
    """What one scan found for one model directory.

    `versions` holds the version directories with a model file that `policy` can select (all of them when
    `policy` is None); `skipped` the directory names that look like versions but are not (see version_number).
    """

    name: str
    path: Path
    versions: dict[int, FileSignature]
    config_files: tuple[FileSignature, ...]
    policy: VersionPolicy | None = None
    skipped: tuple[str, ...] = ()
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
    logged_failure: str = ""  # the failure last logged, so an unchanged one is not logged on every scan
    lock: DeferredLock = field(default_factory=DeferredLock)


def version_number(name: str) -> int | None:
    """A version directory's number: canonical ASCII decimal, 1 to 18 digits, no leading zero. `"²".isdigit()` is
    True but int("²") raises, and int("٣") is 3; "007" and "7" would both be version 7."""
    if 0 < len(name) <= 18 and name.isascii() and name.isdigit() and name[0] != "0":
        return int(name)
    return None


Listing = tuple[tuple[int, int, int], dict[int, str], tuple[str, ...]]  # ((dev, inode, mtime_ns), numbers, skipped)
RACY_S = 2.0  # a listing is reused only for a directory unchanged for this long (mtime ticks can be coarse)


def scan_repository(root: Path, policies: Mapping[str, VersionPolicy | None] | None = None,
                    listings: dict[Path, Listing] | None = None) -> dict[str, ModelOnDisk]:
    """Blocking: list models, their version files and config files. `policies` (the version policy each known model
    was last configured with) and `listings` (the version directories each model directory held, by its mtime)
    let a model with 10,000 version directories be scanned without listing or opening them all every poll."""
    found: dict[str, ModelOnDisk] = {}
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a directory")
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if valid_model_name(e.name) and e.is_dir())
    for name in names:
        try:
            found[name] = scan_model(root / name, (policies or {}).get(name), listings)
        except FileNotFoundError:  # removed between the listing and the look inside: gone, as the next scan says
            continue
    if listings is not None:
        for gone in [path for path in listings if path.name not in found]:
            del listings[gone]
    return found


def _list_versions(model_dir: Path, listings: dict[Path, Listing] | None) -> Listing:
    """The version directories of a model. Adding, removing or renaming one changes the directory's mtime, so an
    unchanged mtime (older than RACY_S, so a change in the same tick cannot hide) means an unchanged listing; the
    inode is part of the key, so a symlinked model directory pointed elsewhere is listed again."""
    st = os.stat(model_dir)
    mtime_ns, key = st.st_mtime_ns, (st.st_dev, st.st_ino, st.st_mtime_ns)
    cached = listings.get(model_dir) if listings is not None else None
    if cached is not None and cached[0] == key:
        return cached
    numbered: dict[int, str] = {}
    skipped = []
    with os.scandir(model_dir) as entries:
        for entry in entries:
            if not entry.is_dir():
                continue
            number = version_number(entry.name)
            if number is not None:
                numbered[number] = entry.name
            elif entry.name.isnumeric():
                skipped.append(entry.name)
    listing = (key, numbered, tuple(sorted(skipped)))
    if listings is not None and time.time_ns() - mtime_ns > RACY_S * 1e9:
        listings[model_dir] = listing
    return listing


def scan_model(model_dir: Path, policy: VersionPolicy | None = None,
               listings: dict[Path, Listing] | None = None) -> ModelOnDisk:
    """One model directory. A version directory is only opened when `policy` may select it, newest first, so the
    cost of a poll does not grow with the versions kept."""
    _, numbered, skipped = _list_versions(model_dir, listings)
    candidates = sorted(numbered, reverse=True)
    if policy is not None and policy.policy == "specific":
        candidates = [v for v in candidates if v in policy.versions]
    versions, bare = {}, {}
    for number in candidates:
        model_file = find_model_file(model_dir / numbered[number])
        if model_file is None:
            bare[number] = FileSignature.of(model_dir / numbered[number])  # an ensemble's empty "1/"
            continue
        versions[number] = (FileSignature.of_python_model(model_file) if model_file.name == "model.py"
                            else FileSignature.of(model_file))
        if policy is not None and policy.policy == "latest" and len(versions) >= policy.latest_n:
            break
    configs = tuple(FileSignature.of(model_dir / n) for n in CONFIG_FILES if (model_dir / n).is_file())
    return ModelOnDisk(model_dir.name, model_dir, versions, configs, policy, skipped, bare)

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
        self._poll_lock = DeferredLock()  # one scan at a time; the reconciles it starts run on per-model locks
        self._skipped_logged: set[tuple[str, str]] = set()
        self._listings: dict[Path, Listing] = {}  # the scan thread's, under the poll lock
        self._started = False  # start-up's loads are frozen by the server once it listens (twinfer.gc_policy)

    @property
    def reactor(self) -> IReactorTime:
        """The reactor this repository schedules on (the facade's, the front-ends')."""
        return self._clock

    def attach_caller(self, facade: Any) -> None:
        """Let the backends loaded from now on (python models, ensembles) call models through the facade's
        `infer`, on this repository's reactor, and manage them through the facade (load, unload, resolve)."""
        self._options = replace(self._options, caller=ModelCaller(self._clock, facade.infer, facade))

    # --- lifecycle ----------------------------------------------------------------------------------------------

    @inlineCallbacks
    def start(self):
        """Load everything on disk; then poll for changes when an interval is set."""
        yield self.poll()
        self._started = True
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
        """The periodic poll: done once the scan has started its reconciles, so a model that takes 30 s to load
        never delays the next scan, nor the hot reload of any other model."""

        def started(work: list[Deferred]) -> None:
            for d in work:
                d.addErrback(lambda f: log.failure("model reconcile failed", f))

        d = self._poll_lock.run(self._scan_and_start)
        d.addCallback(started)
        d.addErrback(lambda f: log.failure("repository poll failed", f))
        return d

    def poll(self) -> Deferred[None]:
        """One scan of the directory; fires once the loads and unloads it called for have finished."""
        d = self._poll_lock.run(self._scan_and_start)
        d.addCallback(lambda work: gatherResults(work, consumeErrors=True))
        return d.addCallback(lambda _: None)

    @inlineCallbacks
    def _scan_and_start(self):
        """Scan (in a thread), then start one reconcile per model on its own lock; a model still busy with an
        earlier one (a slow load) is left to the next poll rather than queued behind itself."""
        hints = {name: (m.disk_config or m.config).version_policy for name, m in self._models.items()
                 if (m.disk_config or m.config) is not None}
        on_disk = yield self._threads.run_io(scan_repository, self.root, hints, self._listings)
        work = []
        for name, entry in on_disk.items():
            for odd in entry.skipped:
                if (name, odd) not in self._skipped_logged:
                    self._skipped_logged.add((name, odd))
                    log.warn("model {name}: directory {odd!r} skipped: a version is a plain ASCII number "
                             "(1, 2, 10; no leading zero)", name=name, odd=odd)
            model = self._models.get(name)
            if model is None or not model.lock.locked:
                work.append(self._with_model_lock(name, self._reconcile, entry))
        for name in [n for n in self._models if n not in on_disk]:
            if not self._models[name].lock.locked:
                work.append(self._with_model_lock(name, self._remove_gone))
        return work

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
        # One error for a version that is not a number, whichever transport asked (HTTP checks it in the URL with
        # the same words). isascii: "²".isdigit() is True but int("²") raises.
        if not (version.isascii() and version.isdigit()):
            raise InvalidInput(f"invalid model version {version!r}: versions are positive integers")
        # 18 digits: int() of a 5,000-digit string raises.
        if len(version) > 18 or int(version) not in versions:
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
        if entry.policy is not None and entry.policy != config.version_policy:  # scanned for another policy
            entry = yield self._threads.run_io(scan_model, entry.path, config.version_policy)
        if entry.policy is not None and any(model.failed.get(v) == sig for v, sig in entry.versions.items()):
            # The scan held only what the policy picks; one of those is refused, so the policy must look further
            # (`latest: 1` falls back to the next newest): list every version.
            entry = yield self._threads.run_io(scan_model, entry.path, None)
        config_changed = force or config != model.config
        if canonical_backend(config.backend) == "ensemble":  # its versions are directories without a model file
            entry = replace(entry, versions={**entry.bare_versions, **entry.versions})
        if not config.version_policy.select(list(entry.versions)):
            self._mark_failed(model, "no version directory with a model file")
            yield self._retire_all(model, "no versions on disk")
            return
        wanted, loaded, refused = yield self._load_passing(model, entry, config, config_changed)
        if refused:
            note = self._log_refusals(model, refused, wanted, loaded)
        elif not loaded and set(model.versions) == set(wanted):
            return
        else:
            note = ""
        self._swap(model, config, config_changed, wanted, loaded, note)

    @inlineCallbacks
    def _load_passing(self, model: ServedModel, entry: ModelOnDisk, config: ModelConfig, config_changed: bool):
        """Load what the version policy wants among the versions not refused; a refused version drops out and the
        policy picks again (so `latest: 1` falls back to the next newest that passes its gate), at start-up as in
        hot reload. Returns (wanted, loaded, refused: [(version, error)])."""
        loaded: dict[int, ModelVersion] = {}
        refused: list[tuple[int, Exception]] = []
        while True:
            usable = [v for v in entry.versions if model.failed.get(v) != entry.versions[v]]
            wanted = config.version_policy.select(usable)
            to_load = [
                v for v in wanted
                if v not in loaded and (
                    config_changed or v not in model.versions or model.versions[v].signature != entry.versions[v])
            ]
            if not to_load:
                return wanted, {v: mv for v, mv in loaded.items() if v in wanted}, refused
            for v in to_load:
                signature = entry.versions[v]
                try:
                    backend = yield self._threads.run_io(load_and_warm, config, signature.path, self._options)
                except (ModelLoadError, ConfigError) as exc:
                    model.failed[v] = signature
                    refused.append((v, exc))
                    continue
                loaded[v] = ModelVersion(self._clock, self._threads, config, v, backend, signature)
                model.failed.pop(v, None)
                log.info("model {name} version {v} loaded and warmed up", name=model.name, v=v)
                if self._started:
                    freeze_long_lived(f"loading {model.name} version {v}", full=False)

    def _log_refusals(
        self, model: ServedModel, refused: list[tuple[int, Exception]], wanted: list[int],
        loaded: dict[int, ModelVersion],
    ) -> str:
        """One line per refused version, saying what serves instead; returns the last, for the model's status."""
        serving = sorted(loaded) or sorted(v for v in model.versions if v in wanted)
        if serving and loaded:
            instead = f"version {', '.join(map(str, serving))} serves instead"
        elif serving:
            instead = f"version {', '.join(map(str, serving))} keeps serving"
        else:
            instead = "no version serves"
        line = ""
        for v, exc in refused:
            line = f"version {v} refused: {exc}; {instead}"
            log.error("model {name} {line}", name=model.name, line=line)
        return line

    def _swap(
        self, model: ServedModel, config: ModelConfig, config_changed: bool, wanted: list[int],
        loaded: dict[int, ModelVersion], note: str = "",
    ) -> None:
        """Install the new versions in one assignment; retire what they replace, only if something will serve."""
        keep = {v: mv for v, mv in model.versions.items() if v in wanted and v not in loaded}
        if config_changed and loaded:
            keep = {}  # every version runs with the new configuration or not at all
        new_versions = {**keep, **loaded}
        if not new_versions:
            self._mark_failed(model, note or model.reason or "no version could be loaded", logged=bool(note))
            return
        old = model.versions
        model.versions = new_versions
        if loaded:
            model.config = config
        model.state, model.reason = "READY", note
        model.logged_failure = ""
        for v, mv in old.items():
            if new_versions.get(v) is not mv:
                log.info("model {name} version {v} draining", name=model.name, v=v)
                mv.retire().addErrback(lambda f: log.failure("unload failed", f))

    def _mark_failed(self, model: ServedModel, reason: str, logged: bool = False) -> None:
        """Logged once per change of state: a repository scan every 2 s must not repeat an unchanged failure."""
        model.reason = reason
        if not model.versions:
            model.state = "UNAVAILABLE"
        if reason != model.logged_failure and not logged:
            log.error("model {name}: {reason}", name=model.name, reason=reason)
        model.logged_failure = reason

    def _retire_all(self, model: ServedModel, reason: str) -> Deferred:
        old, model.versions = model.versions, {}
        model.state, model.reason = "UNAVAILABLE", reason
        return gatherResults([mv.retire() for mv in old.values()], consumeErrors=True)

    @inlineCallbacks
    def _remove_gone(self, model: ServedModel):
        yield self._retire_all(model, "removed from the repository")
        if self._models.get(model.name) is model:
            del self._models[model.name]
