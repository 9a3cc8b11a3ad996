"""Head pose from the 3D face mesh: a similarity fit (Umeyama's Kabsch with scale) of the canonical face to the
frame's landmarks, on the points that move with the skull only (`mesh.STABLE_POINTS`), equally weighted (the
mediapipe wheel ships no geometry-pipeline weights; the canonical face is made from the astronaut fixture, see
tools/face_fixtures.py).

Input landmarks are MediaPipe's: frame pixels, x right, y down, z relative depth (smaller = closer) in the same
units as x. They are read as a weak-perspective (scaled orthographic) view, which is what the landmark model's
3D output is; the fitted scale (pixels per metre) then gives the distance through a pinhole camera whose focal
length is assumed, by default, from a 60 degree horizontal field of view (a typical webcam: f = 0.866 x width).

Conventions are FaceReading's (ARKit's face frame): x towards the viewer's right, y up, z towards the camera;
rotation R = Ry(yaw) @ Rx(pitch) @ Rz(roll), each angle positive by the right-hand rule (yaw > 0: the person turns
to their own left; pitch > 0: chin down; roll > 0: the face turns counter-clockwise on screen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from twinfer.faces.mesh import STABLE_POINTS

IMAGE_TO_FACE_AXES = np.array([1.0, -1.0, -1.0])   # (x right, y down, z away) -> (x right, y up, z out)
DEFAULT_HFOV_RAD = math.radians(60.0)
CANONICAL_FACE_FILE = Path(__file__).resolve().parent.parent / "data" / "faces" / "canonical_face.npy"


class DegenerateLandmarks(ValueError):
    """The landmarks cannot be a face (non-finite, collapsed, mirrored): never solve values from them."""


@lru_cache(maxsize=1)
def canonical_face() -> np.ndarray:
    """(468, 3) float64 metres in the face frame, symmetric about x = 0 (tools/face_fixtures.py records it)."""
    return np.load(CANONICAL_FACE_FILE).astype(np.float64)


@dataclass(frozen=True, slots=True)
class HeadPose:
    rotation: np.ndarray        # (3, 3) face frame -> camera axes
    scale: float                # pixels per metre of the canonical face
    origin: np.ndarray          # (3,) the canonical origin in the frame, pixels, face axes (y up, z out)
    translation: np.ndarray     # (3,) metres, camera frame (x right, y up, z towards the camera: in front is z < 0)
    fit_residual_m: float       # RMS distance of the fitted points from the canonical face, metres

    @property
    def angles(self) -> np.ndarray:
        """(yaw, pitch, roll) radians."""
        return rotation_to_angles(self.rotation)

    def to_face_frame(self, points_px: np.ndarray) -> np.ndarray:
        """Frame landmarks (N, 3) in MediaPipe's image axes -> metres in the head's own frame (pose removed)."""
        p = np.asarray(points_px, np.float64) * IMAGE_TO_FACE_AXES
        return (p - self.origin) @ self.rotation / self.scale


def rotation_to_angles(r: np.ndarray) -> np.ndarray:
    pitch = math.asin(max(-1.0, min(1.0, -float(r[1, 2]))))
    yaw = math.atan2(float(r[0, 2]), float(r[2, 2]))
    roll = math.atan2(float(r[1, 0]), float(r[1, 1]))
    return np.array([yaw, pitch, roll])


def angles_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def similarity_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama (1991): s, R, t minimising sum w |s R src + t - dst|^2, R a proper rotation."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = float(w @ (a * a).sum(axis=1))
    scale = float((sig * d).sum() / var_s)
    return scale, rot, mu_d - scale * rot @ mu_s


def estimate_head_pose(landmarks_px: np.ndarray, frame_size: tuple[int, int],
                       hfov_rad: float = DEFAULT_HFOV_RAD) -> HeadPose:
    """Fit the canonical face to (468, 3) frame landmarks. `frame_size` is (width, height) in pixels."""
    pts = np.asarray(landmarks_px, np.float64)
    if pts.shape[0] < 468 or pts.shape[1] != 3 or not np.all(np.isfinite(pts[:468])):
        raise DegenerateLandmarks(f"expected 468 finite (x, y, z) landmarks, got shape {pts.shape}")
    idx = np.asarray(STABLE_POINTS)
    dst = pts[idx] * IMAGE_TO_FACE_AXES
    scale, rot, origin = similarity_fit(canonical_face()[idx], dst)
    if not scale > 1e-6 or not math.isfinite(scale):
        raise DegenerateLandmarks(f"face scale {scale} px/m")
    width, height = frame_size
    focal_px = (width / 2) / math.tan(hfov_rad / 2)
    translation = np.array([(origin[0] - width / 2) / scale, (origin[1] + height / 2) / scale, -focal_px / scale])
    fitted = (dst - origin) @ rot / scale
    residual = float(np.sqrt(np.mean(np.sum((fitted - canonical_face()[idx]) ** 2, axis=1))))
    return HeadPose(rot, scale, origin, translation, residual)
