"""Record MediaPipe's own face-mesh landmarks on the fixed astronaut sequence (tests/face_frames.py) into
tests/data/faces/mediapipe_reference.npz, the reference twinfer's tracker is tested against (issue #15: mean
landmark distance within 1 % of the face width, same weights). Run again to reproduce it:

    PYTHONPATH=src .venv/bin/python tools/mediapipe_reference.py

It sets up .peers/mediapipe once (`python -m venv` + `pip install mediapipe==0.10.21`, bench/peers.py), renders the
frames here (Pillow, numpy, scikit-image's astronaut), and runs `mp.solutions.face_mesh.FaceMesh(static_image_mode=
False, refine_landmarks=False)` over them in that venv (tools/mediapipe_face_mesh.py): tracking mode, the frames in
order, once. The fixture holds per frame the variant's name, the 468 points in frame pixels (x * W, y * H, z * W;
NaN where MediaPipe found no face) and the frames' digest (channel means), so the test notices a Pillow or libjpeg
that renders the recipe differently. twinfer never imports mediapipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import setup_venv  # noqa: E402
from tests.face_frames import REPEATS, frame_digest, reference_frames  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "faces" / "mediapipe_reference.npz"
RUNNER = ROOT / "tools" / "mediapipe_face_mesh.py"


def mediapipe_landmarks(frames: np.ndarray) -> tuple[np.ndarray, str]:
    """(N, 468, 3) MediaPipe landmarks in frame pixels, and the mediapipe version that made them."""
    python = setup_venv("mediapipe") / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="twinfer-mp-") as tmp:
        frames_file, out_file = Path(tmp) / "frames.npy", Path(tmp) / "landmarks.npy"
        np.save(frames_file, frames)
        subprocess.run([str(python), str(RUNNER), "landmarks", str(frames_file), str(out_file)], check=True,
                       stderr=subprocess.DEVNULL)
        version = subprocess.run([str(python), "-c", "import mediapipe; print(mediapipe.__version__)"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        return np.load(out_file), version


def main() -> int:
    names, frames = reference_frames()
    landmarks, version = mediapipe_landmarks(frames)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, names=np.array(names), landmarks=landmarks.astype(np.float32),
                        digest=frame_digest(frames), repeats=np.int64(REPEATS),
                        meta=np.array(json.dumps({"mediapipe": version, "static_image_mode": False,
                                                  "refine_landmarks": False, "max_num_faces": 1})))
    found = ~np.isnan(landmarks[:, 0, 0])
    print(f"mediapipe {version}: a face in {int(found.sum())} of {len(frames)} frames; wrote {FIXTURE} "
          f"({FIXTURE.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
