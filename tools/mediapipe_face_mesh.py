"""MediaPipe's own face mesh on a sequence of frames, run INSIDE the mediapipe peer venv (.peers/mediapipe): the
reference twinfer's tracker is compared with (tools/mediapipe_reference.py) and the peer it is benchmarked against
(bench/faces.py). Imports only mediapipe and numpy, never twinfer.

    .peers/mediapipe/bin/python tools/mediapipe_face_mesh.py landmarks FRAMES.npy OUT.npy
    .peers/mediapipe/bin/python tools/mediapipe_face_mesh.py bench FRAMES.npy --seconds 10 [--refine]  # one JSON line

`FRAMES.npy` is (N, H, W, 3) uint8 RGB. `landmarks` runs `FaceMesh(static_image_mode=False, refine_landmarks=False)`
(tracking mode: the detector only while no face is tracked) over the frames once, in order, and saves (N, 468, 3)
float32 in frame pixels (x * W, y * H, z * W; NaN where no face was found). `bench` loops the same frames in
tracking mode and reports frames per process CPU-second (time.process_time: every thread of this process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def face_mesh(refine: bool = False):
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=refine)


def landmarks(frames: np.ndarray) -> np.ndarray:
    out = np.full((len(frames), 468, 3), np.nan, np.float32)
    height, width = frames.shape[1:3]
    with face_mesh() as mesh:
        for i, frame in enumerate(frames):
            result = mesh.process(frame)
            if result.multi_face_landmarks:
                points = result.multi_face_landmarks[0].landmark
                out[i] = [(p.x * width, p.y * height, p.z * width) for p in points]
    return out


def bench(frames: np.ndarray, seconds: float, refine: bool = False) -> dict[str, float]:
    with face_mesh(refine) as mesh:
        for frame in frames[:10]:  # warm-up: graph start, XNNPACK set-up
            mesh.process(frame)
        count, found = 0, 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            result = mesh.process(frames[count % len(frames)])
            found += bool(result.multi_face_landmarks)
            count += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"frames": count, "found": found, "cpu_s": cpu, "wall_s": wall, "frames_per_cpu_s": count / cpu,
            "frames_per_s": count / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("landmarks", "bench"))
    parser.add_argument("frames", help="(N, H, W, 3) uint8 .npy")
    parser.add_argument("out", nargs="?", help="landmarks: the (N, 468, 3) .npy to write")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--refine", action="store_true", help="bench: refine_landmarks=True (eyes and lips)")
    args = parser.parse_args(argv)
    frames = np.load(args.frames)
    if args.mode == "landmarks":
        np.save(args.out, landmarks(frames))
    else:
        import mediapipe

        print(json.dumps({**bench(frames, args.seconds, args.refine), "mediapipe": mediapipe.__version__,
                          "refine_landmarks": args.refine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
