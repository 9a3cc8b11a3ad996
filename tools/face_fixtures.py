"""Record the real-face landmark fixtures the solver tests use (tests/data/faces/), and the canonical face the head
pose aligns to (src/twinfer/data/faces/canonical_face.npy). Run again to reproduce them:

    pip download --no-deps mediapipe==0.10.21 -d /tmp/mp      # the Apache-2.0 TFLite models live in this wheel
    pip download --no-deps scikit-image -d /tmp/mp            # astronaut.png (only if scikit-image is not installed)
    pip install ai-edge-litert                                # stock LiteRT runs both models (no mediapipe import)
    PYTHONPATH=src python tools/face_fixtures.py --wheels /tmp/mp

This script (not twinfer) uses `ai-edge-litert`; twinfer's solver reads only the recorded numbers.

The portrait is scikit-image's `astronaut` (a real photo, the face at about x 170-275, y 60-185). Each variant is an
affine map of the portrait into a camera frame (identity, in-plane rotations about the face centre, a mirror, a
smaller face shifted into a 640x480 frame and a larger one). The face crop is a square around the face, turned
by the eye line of the previous pass (3 passes), as a tracker does frame to frame: the landmark model needs an
upright face (shown the face turned by +/-30 degrees in an upright crop, its eye line turns only 16-18 degrees).
Landmarks and iris points are mapped back to the frame's pixels (z scaled like x), the units `FaceSolver.solve`
takes.

`cat` is scikit-image's `chelsea` (a cat: a non-face) through the same landmark model, with the model's own
presence score, so the solver's face-lost path is tested on a real non-face mesh.

The canonical face is the neutral fixture itself, in metres (scaled by an adult's outer eye-corner distance,
90 mm), turned about y and z until its left/right point pairs (`twinfer.faces.mesh`) mirror best, then made
symmetric by averaging each recorded pair (other points keep the portrait's); so yaw = roll = 0 is its symmetric
pose, and pitch = 0 is the portrait's own (its subject faces the camera). The mediapipe wheel ships no
face-geometry data (canonical_face_model.obj, the Procrustes weights), so none is copied: the solver needs no
third-party mesh.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from twinfer.faces.head_pose import CANONICAL_FACE_FILE as CANONICAL, IMAGE_TO_FACE_AXES, similarity_fit
from twinfer.faces.mesh import STABLE_POINTS, mirror_map

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "faces"
FACE_CENTRE = (222.0, 122.0)    # astronaut.png pixels, between the eyes and the mouth
CROP_SIDE = 190.0               # the face crop's side in astronaut pixels (about 1.5 x the face's height)
CAT_CENTRE, CAT_CROP_SIDE = (225.0, 150.0), 250.0   # chelsea.png: the cat's face
EYE_ROI_SCALE = 2.3             # MediaPipe's iris ROI: 2.3 x the eye-corner distance, square, along the corners
TRACKING_PASSES = 3             # landmark passes per variant, the crop turned by the previous pass's eye line
OUTER_CANTHAL_M = 0.090         # adult outer eye-corner distance, metres
LANDMARK_MODEL = "mediapipe/modules/face_landmark/face_landmark.tflite"
IRIS_MODEL = "mediapipe/modules/iris_landmark/iris_landmark.tflite"


@dataclass(frozen=True)
class Variant:
    name: str
    affine: np.ndarray          # (2, 3): astronaut pixels -> frame pixels
    frame_size: tuple[int, int]  # (width, height)
    angle_deg: float = 0.0      # in-plane rotation, counter-clockwise on screen
    mirrored: bool = False
    scale: float = 1.0


def rotation_about(centre: tuple[float, float], angle_deg: float) -> np.ndarray:
    """Counter-clockwise on screen (image y points down)."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    c = np.asarray(centre)
    return np.hstack([rot, (c - rot @ c)[:, None]])


def variants() -> list[Variant]:
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = [Variant("neutral", ident, (512, 512))]
    for angle in (-30, -20, -10, 10, 20, 30):
        out.append(Variant(f"roll_{angle:+d}", rotation_about(FACE_CENTRE, angle), (512, 512), angle_deg=angle))
    mirror = np.array([[-1.0, 0, 512], [0, 1.0, 0]])  # continuous coordinates: pixel i spans [i, i + 1)
    out.append(Variant("mirror", mirror, (512, 512), mirrored=True))
    turned = to3x3(mirror) @ to3x3(rotation_about(FACE_CENTRE, 20))
    out.append(Variant("mirror_roll_+20", turned[:2], (512, 512), angle_deg=-20, mirrored=True))
    out.append(Variant("small_shifted", np.array([[0.6, 0, 330], [0, 0.6, 170]]), (640, 480), scale=0.6))
    out.append(Variant("large_shifted", np.array([[1.4, 0, -120], [0, 1.4, -60]]), (640, 480), scale=1.4))
    return out


def to3x3(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0, 0, 1]])


def sample(image: Image.Image, out_to_src: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resample: out pixel (x, y) takes the source at out_to_src @ (x + .5, y + .5, 1) (pixel centres)."""
    shift = to3x3(np.array([[1.0, 0, 0.5], [0, 1.0, 0.5]]))
    unshift = to3x3(np.array([[1.0, 0, -0.5], [0, 1.0, -0.5]]))
    m = (unshift @ out_to_src @ shift)[:2]
    patch = image.transform((size, size), Image.Transform.AFFINE, data=tuple(m.ravel()), resample=Image.BILINEAR)
    return np.asarray(patch, dtype=np.float32) / 255.0


class Models:
    def __init__(self, wheels: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        wheel = next(wheels.glob("mediapipe-0.10.21-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            self.landmark = Interpreter(model_content=zf.read(LANDMARK_MODEL))
            self.iris = Interpreter(model_content=zf.read(IRIS_MODEL))
        for it in (self.landmark, self.iris):
            it.allocate_tensors()

    @staticmethod
    def _run(it, x: np.ndarray) -> list[np.ndarray]:
        it.set_tensor(it.get_input_details()[0]["index"], x[None].astype(np.float32))
        it.invoke()
        return [it.get_tensor(d["index"]) for d in it.get_output_details()]

    def face(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """(468, 3) in the 192 crop's pixels, presence score (sigmoid of the model's logit)."""
        outs = {o.size: o for o in self._run(self.landmark, crop)}
        logit = float(outs[1].ravel()[0])
        return outs[1404].reshape(468, 3), 1.0 / (1.0 + math.exp(-logit))

    def eye(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(71, 3) eye contour and (5, 3) iris points in the 64 crop's pixels."""
        outs = {o.size: o for o in self._run(self.iris, crop)}
        return outs[213].reshape(71, 3), outs[15].reshape(5, 3)


def skimage_picture(name: str, wheels: Path) -> Image.Image:
    try:
        from skimage import data

        return Image.fromarray(getattr(data, name)())
    except ImportError:
        wheel = next(wheels.glob("scikit_image-*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(f"skimage/data/{name}.png") as f:
            return Image.open(f).convert("RGB")


def square_roi(centre: np.ndarray, side: float, angle: float, size: int, flip: bool = False) -> np.ndarray:
    """3x3 map from a size x size crop to the frame: a square of `side` pixels about `centre`, turned by `angle`
    (image axes); `flip` mirrors the crop (the iris model knows one eye; MediaPipe shows it the other mirrored)."""
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    lin = rot * (side / size)
    if flip:
        lin = lin @ np.diag([-1.0, 1.0])
    return to3x3(np.hstack([lin, (np.asarray(centre) - lin @ np.array([size / 2, size / 2]))[:, None]]))


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """A 3x3 affine of the image plane applied to (N, 3) points; z scales with the map's linear scale."""
    out = pts.astype(np.float64).copy()
    out[:, :2] = pts[:, :2] @ m[:2, :2].T + m[:2, 2]
    out[:, 2] = pts[:, 2] * math.sqrt(abs(np.linalg.det(m[:2, :2])))
    return out


def record(models: Models, image: Image.Image, v: Variant) -> tuple[np.ndarray, np.ndarray, float]:
    frame_from_astro = to3x3(v.affine)
    astro_from_frame = np.linalg.inv(frame_from_astro)
    centre = v.affine[:, :2] @ np.asarray(FACE_CENTRE) + v.affine[:, 2]
    side = CROP_SIDE * v.scale
    angle = 0.0
    for _ in range(TRACKING_PASSES):  # as a tracker does frame to frame: turn the crop by the last eye line
        frame_from_crop = square_roi(centre, side, angle, 192)
        crop = sample(image, astro_from_frame @ frame_from_crop, 192)
        mesh_crop, score = models.face(crop)
        mesh = apply(frame_from_crop, mesh_crop)
        d = mesh[263, :2] - mesh[33, :2]
        angle = math.atan2(d[1], d[0])
    irises = []
    # iris[0]: the person's left eye (mesh corners 362/263), iris[1]: the person's right eye (33/133)
    for (a, b), flip in (((362, 263), True), ((33, 133), False)):
        p, q = mesh[a, :2], mesh[b, :2]
        d = q - p
        frame_from_eye = square_roi((p + q) / 2, EYE_ROI_SCALE * float(np.linalg.norm(d)),
                                    math.atan2(d[1], d[0]), 64, flip)
        eye = sample(image, astro_from_frame @ frame_from_eye, 64)
        _, iris = models.eye(eye)
        irises.append(apply(frame_from_eye, iris))
    return mesh.astype(np.float32), np.stack(irises).astype(np.float32), score


def canonical_from(mesh: np.ndarray) -> np.ndarray:
    """The neutral mesh in its own frame, metres, turned so its left/right pairs mirror best, pairs averaged."""
    p = mesh.astype(np.float64) * IMAGE_TO_FACE_AXES
    q = p - p.mean(axis=0)
    q *= OUTER_CANTHAL_M / np.linalg.norm(q[263] - q[33])
    partner = mirror_map()
    known = np.flatnonzero(partner >= 0)
    flip = np.array([-1.0, 1.0, 1.0])
    # a face turned by D (yaw/roll) mirrors onto itself turned by D^-1, so the fit of q to its mirror is D^-2
    _, twice, _ = similarity_fit(q[known], q[partner[known]] * flip)
    q = q @ half_rotation(twice).T
    sym = q.copy()
    sym[known] = (q[known] + q[partner[known]] * flip) / 2
    stable = np.asarray(STABLE_POINTS)
    return (sym - sym[stable].mean(axis=0)).astype(np.float32)


def half_rotation(r: np.ndarray) -> np.ndarray:
    """The rotation about the same axis by half the angle (Rodrigues)."""
    angle = math.acos(max(-1.0, min(1.0, (np.trace(r) - 1) / 2)))
    if angle < 1e-12:
        return np.eye(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * math.sin(angle))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    h = angle / 2
    return np.eye(3) + math.sin(h) * k + (1 - math.cos(h)) * k @ k


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, default=Path("/tmp/mp"), help="folder with the downloaded wheels")
    ap.add_argument("--preview", type=Path, help="also write crops with the landmarks drawn, to check by eye")
    args = ap.parse_args(argv)
    models = Models(args.wheels)
    image = skimage_picture("astronaut", args.wheels)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    meta = {}
    for v in variants():
        mesh, iris, score = record(models, image, v)
        np.save(FIXTURES / f"{v.name}_landmarks.npy", mesh)
        np.save(FIXTURES / f"{v.name}_iris.npy", iris)
        meta[v.name] = {"frame_size": list(v.frame_size), "angle_deg": v.angle_deg, "mirrored": v.mirrored,
                        "scale": v.scale, "score": round(score, 4)}
        print(f"{v.name:>14}: score {score:.3f}")
        if args.preview:
            preview(image, v, mesh, iris, args.preview)
    # a non-face: the landmark model still returns a mesh for a cat's face, with its own low presence score
    cat = skimage_picture("chelsea", args.wheels)
    mesh_crop, score = models.face(sample(cat, square_roi(np.array(CAT_CENTRE), CAT_CROP_SIDE, 0.0, 192), 192))
    np.save(FIXTURES / "cat_landmarks.npy",
            apply(square_roi(np.array(CAT_CENTRE), CAT_CROP_SIDE, 0.0, 192), mesh_crop).astype(np.float32))
    meta["cat"] = {"frame_size": list(cat.size), "non_face": True, "score": round(score, 4)}
    print(f"{'cat':>14}: score {score:.3f}")
    (FIXTURES / "fixtures.json").write_text(json.dumps(meta, indent=1) + "\n")
    CANONICAL.parent.mkdir(parents=True, exist_ok=True)
    np.save(CANONICAL, canonical_from(np.load(FIXTURES / "neutral_landmarks.npy")))
    print(f"wrote {FIXTURES} and {CANONICAL}")
    return 0


def preview(image: Image.Image, v: Variant, mesh: np.ndarray, iris: np.ndarray, folder: Path) -> None:
    from PIL import ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    frame = image.transform(v.frame_size, Image.Transform.AFFINE,
                            data=tuple(np.linalg.inv(to3x3(v.affine))[:2].ravel()), resample=Image.BILINEAR)
    draw = ImageDraw.Draw(frame)
    for x, y, _ in mesh:
        draw.point((float(x), float(y)), fill=(0, 255, 0))
    for x, y, _ in iris.reshape(-1, 3):
        draw.point((float(x), float(y)), fill=(255, 0, 0))
    frame.save(folder / f"{v.name}.png")


if __name__ == "__main__":
    sys.exit(main())
