"""Eye gaze from the iris: the iris centre's ray meets an eyeball sphere placed behind the eye corners.

The eyeball centre sits `EYEBALL_BEHIND_CORNERS_M` behind the iris's straight-ahead position next to the eye's
corners (in the head frame, so it turns with the head), and the iris centre moves on a sphere of
`IRIS_ROTATION_RADIUS_M` about it. The iris centre's depth from the iris model has its own origin, so it is not
used: the solver intersects the iris centre's viewing ray (weak perspective, along z) with that sphere, takes the
point facing the camera, and turns the direction back into the head frame. That keeps head rotation out of the
gaze. Angles follow FaceReading: yaw > 0 looks to the person's left (+x), pitch > 0 looks down.
"""

from __future__ import annotations

import math

import numpy as np

from twinfer.faces.head_pose import IMAGE_TO_FACE_AXES, HeadPose
from twinfer.faces.mesh import LEFT_EYE, RIGHT_EYE

EYEBALL_BEHIND_CORNERS_M = 0.008   # adult eye: the globe's centre lies about this far behind the canthi
IRIS_ROTATION_RADIUS_M = 0.0105    # the iris plane's distance from the globe's centre (globe radius ~12 mm)
# Where the iris centre sits, looking straight ahead, from the corners' midpoint: measured on the portrait, whose
# subject looks into the camera (left eye 0.5 mm, right 1.8 mm nasal; both 1.0 mm up; iris diameter 11.0-11.4 mm,
# a check of the metric scale).
IRIS_REST_NASAL_M = 0.0011
IRIS_REST_UP_M = 0.0010


def eyeball_centre(pose: HeadPose, face_points_m: np.ndarray, eye: tuple) -> np.ndarray:
    """The eye's globe centre in the frame's face axes (pixels, y up, z out)."""
    inner, outer, _ = eye
    nasal = 1.0 if face_points_m[inner, 0] > face_points_m[outer, 0] else -1.0
    rest = np.array([nasal * IRIS_REST_NASAL_M, IRIS_REST_UP_M, -EYEBALL_BEHIND_CORNERS_M])
    centre_m = (face_points_m[inner] + face_points_m[outer]) / 2 + rest
    return pose.origin + pose.scale * (pose.rotation @ centre_m)


def eye_gaze(pose: HeadPose, face_points_m: np.ndarray, iris_px: np.ndarray, eye: tuple) -> np.ndarray:
    """(yaw, pitch) radians of one eye; `iris_px` (5, 3) is the iris model's output in frame pixels (centre first)."""
    c = eyeball_centre(pose, face_points_m, eye)
    p = np.asarray(iris_px[0], np.float64) * IMAGE_TO_FACE_AXES
    radius = IRIS_ROTATION_RADIUS_M * pose.scale
    dx, dy = p[0] - c[0], p[1] - c[1]
    flat = dx * dx + dy * dy
    if flat > radius * radius:  # off the sphere's silhouette (a bad iris point): clamp to the rim
        k = radius / math.sqrt(flat)
        dx, dy, dz = dx * k, dy * k, 0.0
    else:
        dz = math.sqrt(radius * radius - flat)
    d = pose.rotation.T @ np.array([dx, dy, dz])
    yaw = math.atan2(d[0], d[2])
    pitch = math.atan2(-d[1], math.hypot(d[0], d[2]))
    return np.array([yaw, pitch])


def gaze(pose: HeadPose, face_points_m: np.ndarray, iris_px: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(left eye, right eye) (yaw, pitch); `iris_px` (2, 5, 3): [0] the person's left eye, [1] the right.
    No iris points: both zero (looking ahead), since the mesh's own eye points do not follow the iris well."""
    if iris_px is None:
        return np.zeros(2), np.zeros(2)
    iris = np.asarray(iris_px, np.float64)
    if iris.shape != (2, 5, 3) or not np.all(np.isfinite(iris)):
        return np.zeros(2), np.zeros(2)
    return eye_gaze(pose, face_points_m, iris[0], LEFT_EYE), eye_gaze(pose, face_points_m, iris[1], RIGHT_EYE)
