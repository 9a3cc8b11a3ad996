"""Issue #17 findings 6 and 7: odd version names, a huge config, a slow model beside one being updated, and a model
with thousands of version directories; the repository with synchronous threads (one held) and a fake clock."""

from __future__ import annotations

import os

import numpy as np
import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from tests.support import SyncThreads, build_matmul_relu
from twinfer.inference import repository as repository_module
from twinfer.inference.config_loading import MAX_CONFIG_FILE_BYTES
from twinfer.inference.model_version import load_and_warm
from twinfer.inference.repository import ModelRepository, version_number


@pytest.fixture
def warnings():
    seen: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_level") is not None and event["log_level"].name in ("warn", "error"):
            from twisted.logger import formatEvent

            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def served(repo: ModelRepository, name: str) -> list[int]:
    return sorted(repo.model(name).versions)


def test_version_numbers_are_canonical_ascii_decimals():
    assert [version_number(n) for n in ("1", "10", "123456789012345678")] == [1, 10, 123456789012345678]
    for odd in ("²", "٣", "３", "0", "007", "1234567890123456789", "", "1a", " 1"):
        assert version_number(odd) is None, odd


def test_odd_version_names_are_skipped_with_one_line_and_hot_reload_goes_on(tmp_path, warnings):
    """Finding 6: a "²" directory made every poll fail (int("²") raises), so no model reloaded; "٣" was served
    as version 3. Now both are skipped, logged once per name however many polls see them."""
    root = tmp_path / "repo"
    build_matmul_relu(root / "tiny" / "1" / "model.onnx", np.eye(16))
    build_matmul_relu(root / "other" / "1" / "model.onnx", np.eye(16))
    for odd in ("²", "٣"):
        build_matmul_relu(root / "tiny" / odd / "model.onnx", 5 * np.eye(16))
    repo = ModelRepository(root, Clock(), SyncThreads())
    failures = []
    repo.start().addErrback(failures.append)
    assert not failures and served(repo, "tiny") == [1] and served(repo, "other") == [1]
    build_matmul_relu(root / "tiny" / "2" / "model.onnx", 2 * np.eye(16))
    build_matmul_relu(root / "other" / "2" / "model.onnx", 2 * np.eye(16))
    for _ in range(3):
        repo.poll().addErrback(failures.append)
    assert not failures and served(repo, "tiny") == [2] and served(repo, "other") == [2]
    skips = [w for w in warnings if "skipped" in w]
    assert len(skips) == 2 and any("'²'" in w for w in skips) and any("'٣'" in w for w in skips)


def test_a_config_past_the_cap_is_refused_unread_and_the_others_load(tmp_path):
    """Finding 7: a 73 MB config.pbtxt was parsed whole (30 s, +376 MB, GIL held); now refused past 1 MiB."""
    root = tmp_path / "repo"
    build_matmul_relu(root / "tiny" / "1" / "model.onnx", np.eye(16))
    build_matmul_relu(root / "huge" / "1" / "model.onnx", np.eye(16))
    (root / "huge" / "config.pbtxt").write_text("# padding\n" * (MAX_CONFIG_FILE_BYTES // 10 + 1))
    build_matmul_relu(root / "yaml" / "1" / "model.onnx", np.eye(16))
    (root / "yaml" / "config.yaml").write_text("max_batch_size: 8\n" + "# padding\n" * (MAX_CONFIG_FILE_BYTES // 10))
    repo = ModelRepository(root, Clock(), SyncThreads())
    repo.start()
    assert served(repo, "tiny") == [1]
    for name in ("huge", "yaml"):
        model = repo.model(name)
        assert model.state == "UNAVAILABLE" and "larger than 1024 KiB; refused unread" in model.reason, name


class HeldLoads(SyncThreads):
    """Runs everything inline except loading a version of `held`, which waits until `release()`."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held_model = held
        self.waiting: list[tuple[tuple, Deferred]] = []
        self.hold = False

    def run_io(self, fn, *args):
        if self.hold and fn is load_and_warm and f"/{self.held_model}/" in str(args[1]):
            d: Deferred = Deferred()
            self.waiting.append((args, d))
            return d
        return maybeDeferred(fn, *args)

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for args, d in waiting:
            maybeDeferred(load_and_warm, *args).chainDeferred(d)


def test_a_slow_load_does_not_hold_back_another_models_hot_reload(tmp_path):
    """Finding 7: one lock over the whole poll meant a model loading for 30 s stopped every other model's hot
    reload until it finished. Now each model reconciles on its own; the slow one is picked up when done."""
    root = tmp_path / "repo"
    build_matmul_relu(root / "slow" / "1" / "model.onnx", np.eye(16))
    build_matmul_relu(root / "fast" / "1" / "model.onnx", np.eye(16))
    threads = HeldLoads("slow")
    clock = Clock()
    repo = ModelRepository(root, clock, threads, poll_interval_s=1.0)
    repo.start()
    assert served(repo, "slow") == [1] and served(repo, "fast") == [1]
    threads.hold = True
    build_matmul_relu(root / "slow" / "2" / "model.onnx", 2 * np.eye(16))
    clock.advance(1.0)  # the periodic poll: slow/2 starts loading and stays there
    assert len(threads.waiting) == 1 and served(repo, "slow") == [1]
    for v in (2, 3):
        build_matmul_relu(root / "fast" / str(v) / "model.onnx", v * np.eye(16))
        clock.advance(1.0)
        assert served(repo, "fast") == [v]
    assert len(threads.waiting) == 1  # the busy model was not queued behind itself
    threads.hold = False
    threads.release()
    assert served(repo, "slow") == [2]


def test_thousands_of_version_directories_cost_a_listing_not_a_look_inside_each(tmp_path, monkeypatch):
    """Finding 7: with 10,000 version directories every poll opened each one (bystander p99 2 -> 16 ms); now a
    poll lists the model directory and opens only what the version policy can select."""
    root = tmp_path / "repo"
    build_matmul_relu(root / "many" / "1" / "model.onnx", np.eye(16))
    for v in range(2, 2001):
        (root / "many" / str(v)).mkdir()
        os.link(root / "many" / "1" / "model.onnx", root / "many" / str(v) / "model.onnx")
    repo = ModelRepository(root, Clock(), SyncThreads())
    repo.start()
    assert served(repo, "many") == [2000]
    looked = []
    real = repository_module.find_model_file
    monkeypatch.setattr(repository_module, "find_model_file", lambda d, *a: looked.append(d) or real(d, *a))
    repo.poll()
    assert len(looked) <= 2 and served(repo, "many") == [2000]
    (root / "many" / "2000" / "model.onnx").unlink()  # the newest loses its file: the next one down serves
    looked.clear()
    repo.poll()
    assert served(repo, "many") == [1999] and len(looked) <= 3


def test_an_unchanged_model_directory_is_not_listed_again(tmp_path, monkeypatch):
    """Finding 7: the listing of 10,000 version directories is kept while the directory's mtime says nothing was
    added or removed; a new version directory changes the mtime and is seen on the next poll."""
    root = tmp_path / "repo"
    build_matmul_relu(root / "many" / "1" / "model.onnx", np.eye(16))
    for v in range(2, 201):
        (root / "many" / str(v)).mkdir()
    old = (1_600_000_000 * 10**9,) * 2
    os.utime(root / "many", ns=old)
    repo = ModelRepository(root, Clock(), SyncThreads())
    repo.start()
    listed = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": listed.append(str(p)) or real(p))
    repo.poll()
    assert not [p for p in listed if p.endswith("many")] and served(repo, "many") == [1]
    build_matmul_relu(root / "many" / "201" / "model.onnx", 2 * np.eye(16))
    repo.poll()
    assert [p for p in listed if p.endswith("many")] and served(repo, "many") == [201]


def test_symlinked_model_and_version_directories_are_followed_and_a_repoint_is_seen(tmp_path):
    """Finding 8 (decided: followed). The repository is the operator's; symlinks are how blue/green layouts
    switch (`model -> releases/a`). Re-pointing the link is a change the next poll serves, even when the new
    target's listing has an old mtime."""
    releases = tmp_path / "releases"
    build_matmul_relu(releases / "a" / "1" / "model.onnx", np.eye(16))
    build_matmul_relu(releases / "b" / "7" / "model.onnx", 2 * np.eye(16))
    build_matmul_relu(releases / "v" / "model.onnx", 3 * np.eye(16))
    for d in (releases / "a", releases / "b"):
        os.utime(d, ns=(1_600_000_000 * 10**9,) * 2)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "tiny").symlink_to(releases / "a", target_is_directory=True)
    (root / "other").mkdir()
    (root / "other" / "3").symlink_to(releases / "v", target_is_directory=True)
    repo = ModelRepository(root, Clock(), SyncThreads())
    repo.start()
    assert served(repo, "tiny") == [1] and served(repo, "other") == [3]
    (root / "tiny").unlink()
    (root / "tiny").symlink_to(releases / "b", target_is_directory=True)
    repo.poll()
    assert served(repo, "tiny") == [7]
