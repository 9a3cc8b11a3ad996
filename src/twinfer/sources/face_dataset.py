"""Datasets of synthetic faces with their ARKit targets: training data for `twinfer train face-blendshapes` and the
held-out validation set the face model's gate checks. Needs only numpy (no PyTorch), so `make models` can write the
validation set of the shipped model on a machine without the training extra.

Seeds: every chunk of samples is drawn from its own `default_rng((seed, chunk))` stream, so a dataset is the same
bytes whatever the number of worker processes, and the validation seed is kept apart from any training seed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.atomic_files import write_atomically
from twinfer.sources.synthetic_face import DRIVEN, training_batch

VALIDATION_SEED = 1_000_003  # never used for training data: `twinfer train` refuses it
VALIDATION_SAMPLES = 256
CHUNK = 256
DRIVEN_INDEX = np.array([ARKIT_BLENDSHAPES.index(name) for name in DRIVEN])


def _chunk(seed: int, chunk: int, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, driven = training_batch(np.random.default_rng((seed, chunk)), count, size)
    targets = np.zeros((count, len(ARKIT_BLENDSHAPES)), np.float32)
    targets[:, DRIVEN_INDEX] = driven
    return images, targets


def face_dataset(samples: int, size: int, seed: int, processes: int = 1,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 1, size, size) in [0, 1], targets float32 (N, 52) in ARKit order). `progress` gets the
    number of samples finished after each chunk."""
    jobs = [(seed, i, min(CHUNK, samples - start), size) for i, start in enumerate(range(0, samples, CHUNK))]
    images = np.empty((samples, 1, size, size), np.float32)
    targets = np.empty((samples, len(ARKIT_BLENDSHAPES)), np.float32)
    done = 0

    def store(i: int, result: tuple[np.ndarray, np.ndarray]) -> None:
        nonlocal done
        start = i * CHUNK
        images[start : start + len(result[0])], targets[start : start + len(result[0])] = result
        done += len(result[0])
        if progress is not None:
            progress(done)

    if processes <= 1 or len(jobs) == 1:
        for i, job in enumerate(jobs):
            store(i, _chunk(*job))
    else:
        with ProcessPoolExecutor(processes) as pool:
            for i, result in enumerate(pool.map(_chunk, *zip(*jobs))):
                store(i, result)
    return images, targets


def write_validation_set(path: Path, size: int, samples: int = VALIDATION_SAMPLES, input_name: str = "image",
                         output_name: str = "blendshapes") -> Path:
    """The held-out set the face model's validation gate reads (`validation.dataset` in its config), written
    atomically; the same bytes on every machine."""
    images, targets = face_dataset(samples, size, VALIDATION_SEED)

    def write(tmp: Path) -> None:
        # np.savez stamps each member with the current time; a fixed stamp keeps the file the same bytes.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in ((input_name, images), (output_name, targets)):
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(member, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)

    write_atomically(path, write)
    return path
