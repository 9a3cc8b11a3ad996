"""Landmarks in the head's own frame -> the 52 ARKit blendshapes, each in [0, 1].

The solver first removes the head pose (`HeadPose.to_face_frame`: rotation, translation and scale), so every
measure here is in metres of the canonical face and neither head motion nor distance reads as expression. Each
shape is one geometric measure (`measures`) mapped through a range: `clip((m - rest) / (extreme - rest), 0, 1)`,
rest -> 0 and extreme -> 1 (`RANGES`). `rest` is the measure on the canonical (neutral) face unless noted; the
extremes are the travel of a strong expression (a few millimetres for lips and brows, ~3 cm for the jaw). The
canonical face is a real portrait smiling with parted lips, so the smile's and the jaw's rests are set for a
closed, relaxed mouth instead (noted below) and the portrait reads its smile (~0.55) and a little jawOpen (~0.17);
calibration (`calibration.py`) takes each user's own neutral face.

Left and Right are the person's own (ARKit): mouthSmileLeft is the corner on the image's right for a face seen
from the front. The eyeLook* shapes come from the per-eye gaze angles (`gaze.py`).
"""

from __future__ import annotations

import numpy as np

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.faces.mesh import LEFT_EYE, RIGHT_EYE

INDEX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}

# The landmarks carry no information about these: they stay 0 (listed in the README).
UNOBSERVED: tuple[str, ...] = ("tongueOut",)

# gaze angle (radians) that reads 1.0 on the eyeLook shapes
LOOK_SIDEWAYS_RAD = np.radians(30.0)
LOOK_UP_RAD = np.radians(25.0)
LOOK_DOWN_RAD = np.radians(25.0)

# Person's right (image left) and left (image right) points per feature.
SIDES = {
    "Right": dict(eye=RIGHT_EYE, corner=61, brow=(107, 66, 105), brow_outer=(70, 46), cheek=50,
                  nose_wing=(129, 49), upper_side=40, lower_side=91, upper_outer=37, upper_inner=82,
                  lower_inner=87, lower_outer=84),
    "Left": dict(eye=LEFT_EYE, corner=291, brow=(336, 296, 334), brow_outer=(300, 276), cheek=280,
                 nose_wing=(358, 279), upper_side=270, lower_side=321, upper_outer=267,
                 upper_inner=312, lower_inner=317, lower_outer=314),
}
CORNER_JAW_FOLLOW = 0.4   # share of the inner lips' opening the mouth corners travel with the jaw
NOSE_BASE, UPPER_LIP, UPPER_INNER, LOWER_INNER, LOWER_LIP, CHIN = 2, 0, 13, 14, 17, 152
INNER_BROWS = (107, 336, 55, 285)
CHEEKS_LOW = (205, 425)


def _flat(values) -> set[int]:
    out: set[int] = set()
    for v in values:
        out |= _flat(v) if isinstance(v, tuple) else {v}
    return out


# every mesh point a measure reads (all have mirror partners, so mirrored faces measure alike)
MEASURED_POINTS: frozenset[int] = frozenset(
    _flat(tuple(tuple(s.values()) for s in SIDES.values()))
    | {NOSE_BASE, UPPER_LIP, UPPER_INNER, LOWER_INNER, LOWER_LIP, CHIN, *INNER_BROWS, *CHEEKS_LOW})


def _eye_measures(h: np.ndarray, eye: tuple) -> tuple[float, float]:
    """(upper lid above, lower lid below) the corners' line, per eye width: blinking moves the upper lid, squinting
    the lower one, so each shape reads its own lid."""
    inner, outer, lids = eye
    width = float(np.linalg.norm(h[outer] - h[inner]))
    corner_y = (h[inner, 1] + h[outer, 1]) / 2
    upper = float(np.mean([h[u, 1] for u, _ in lids]) - corner_y) / width
    lower = float(corner_y - np.mean([h[lo, 1] for _, lo in lids])) / width
    return upper, lower


def measures(h: np.ndarray) -> dict[str, float]:
    """The geometric measures the shapes read, from (468, 3) head-frame metres."""
    m: dict[str, float] = {}
    # the corners' reference height follows the jaw part of the way, as real mouth corners do when the jaw opens
    mouth_ref_y = h[UPPER_INNER, 1] - CORNER_JAW_FOLLOW * (h[UPPER_INNER, 1] - h[LOWER_INNER, 1])
    mid_x = (h[UPPER_LIP, 0] + h[LOWER_LIP, 0]) / 2
    m["jaw_drop"] = float(h[NOSE_BASE, 1] - h[CHIN, 1])
    m["jaw_side"] = float(h[CHIN, 0])
    m["jaw_forward"] = float(h[CHIN, 2])
    m["lip_gap"] = float(h[UPPER_INNER, 1] - h[LOWER_INNER, 1])
    m["mouth_width"] = float(np.linalg.norm(h[291] - h[61]))
    m["mouth_side"] = float((h[61, 0] + h[291, 0] + h[UPPER_LIP, 0] + h[LOWER_LIP, 0]) / 4)
    m["upper_lip_height"] = float(h[UPPER_LIP, 1] - h[UPPER_INNER, 1])
    m["lower_lip_height"] = float(h[LOWER_INNER, 1] - h[LOWER_LIP, 1])
    m["upper_lip_to_nose"] = float(h[NOSE_BASE, 1] - h[UPPER_LIP, 1])
    m["lower_lip_to_chin"] = float(h[LOWER_INNER, 1] - h[CHIN, 1])   # the inner edge: rolling does not move it
    m["cheek_width"] = float(h[CHEEKS_LOW[1], 0] - h[CHEEKS_LOW[0], 0])
    eyes_y = (h[RIGHT_EYE[0], 1] + h[RIGHT_EYE[1], 1] + h[LEFT_EYE[0], 1] + h[LEFT_EYE[1], 1]) / 4
    m["brow_inner"] = float(np.mean(h[list(INNER_BROWS), 1]) - eyes_y)
    for side, s in SIDES.items():
        eye_y = (h[s["eye"][0], 1] + h[s["eye"][1], 1]) / 2
        m[f"eye_upper{side}"], m[f"eye_lower{side}"] = _eye_measures(h, s["eye"])
        m[f"corner_up{side}"] = float(h[s["corner"], 1] - mouth_ref_y)
        m[f"corner_out{side}"] = float(abs(h[s["corner"], 0] - mid_x))
        m[f"corner_depth{side}"] = float(h[s["corner"], 2])
        m[f"brow{side}"] = float(np.mean(h[list(s["brow"]), 1]) - eye_y)
        m[f"brow_outer{side}"] = float(np.mean(h[list(s["brow_outer"]), 1]) - eye_y)
        m[f"cheek_up{side}"] = float(h[s["cheek"], 1] - eye_y)
        m[f"nose_wing{side}"] = float(np.mean(h[list(s["nose_wing"]), 1]) - eye_y)
        m[f"upper_side{side}"] = float(h[NOSE_BASE, 1] - h[s["upper_side"], 1])
        m[f"lower_side{side}"] = float(h[s["lower_side"], 1] - h[CHIN, 1])
        m[f"lip_press{side}"] = float((h[s["upper_outer"], 1] - h[s["upper_inner"], 1])
                                      + (h[s["lower_inner"], 1] - h[s["lower_outer"], 1]))
    return m


# shape -> (measure, rest, extreme), metres unless a ratio (eye measures: per eye width). Mirrored shapes share
# constants (the canonical face is symmetric). rest = the canonical face's measure (a test holds them to it) except
# jawOpen, mouthSmile and mouthFrown, whose rests are a closed relaxed mouth.
RESTS_NOT_FROM_THE_CANONICAL_FACE = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
                                     "mouthFrownRight")
def _sided(shape: str, measure: str, rest: float, extreme: float) -> dict[str, tuple[str, float, float]]:
    return {f"{shape}{side}": (f"{measure}{side}", rest, extreme) for side in ("Left", "Right")}


JAW_REST_M = 0.0577        # canonical 0.0627 less 5 mm: the portrait's open-lipped smile drops the jaw a little
MOUTH_WIDTH_REST_M = 0.0622
NARROW_MOUTH_M = 0.0435    # 0.7 x the canonical mouth width: a full pucker or funnel
LIPS_APART_M = 0.012       # inner-lip gap at which the mouth counts as open (funnel rather than pucker)
RANGES: dict[str, tuple[str, float, float]] = {
    **_sided("eyeBlink", "eye_upper", 0.2085, -0.060),   # closed: the upper lid down on the lower one
    **_sided("eyeWide", "eye_upper", 0.2085, 0.320),
    **_sided("eyeSquint", "eye_lower", 0.1015, 0.040),
    "jawOpen": ("jaw_drop", JAW_REST_M, JAW_REST_M + 0.030),
    "jawLeft": ("jaw_side", 0.0, 0.012),
    "jawRight": ("jaw_side", 0.0, -0.012),
    "jawForward": ("jaw_forward", -0.0188, -0.0088),
    "mouthLeft": ("mouth_side", 0.0, 0.012),
    "mouthRight": ("mouth_side", 0.0, -0.012),
    **_sided("mouthSmile", "corner_up", 0.0, 0.012),     # rest: corners level with the reference (portrait: +6.5 mm)
    **_sided("mouthFrown", "corner_up", 0.0, -0.010),
    **_sided("mouthStretch", "corner_out", 0.0311, 0.0431),
    **_sided("mouthDimple", "corner_depth", -0.0157, -0.0237),
    "mouthRollUpper": ("upper_lip_height", 0.0035, 0.0010),
    "mouthRollLower": ("lower_lip_height", 0.0081, 0.0025),
    "mouthShrugUpper": ("upper_lip_to_nose", 0.0084, 0.0024),
    "mouthShrugLower": ("lower_lip_to_chin", 0.0377, 0.0457),
    **_sided("mouthPress", "lip_press", 0.0116, 0.0060),
    **_sided("mouthUpperUp", "upper_side", 0.0080, 0.0020),
    **_sided("mouthLowerDown", "lower_side", 0.0400, 0.0320),
    **_sided("browDown", "brow", 0.0231, 0.0151),
    "browInnerUp": ("brow_inner", 0.0174, 0.0274),
    **_sided("browOuterUp", "brow_outer", 0.0148, 0.0248),
    "cheekPuff": ("cheek_width", 0.0829, 0.0949),
    **_sided("cheekSquint", "cheek_up", -0.0252, -0.0202),
    **_sided("noseSneer", "nose_wing", -0.0296, -0.0256),
}
# mouthClose, mouthFunnel, mouthPucker and the eyeLook shapes combine measures (see solve_blendshapes)
DERIVED: tuple[str, ...] = ("mouthClose", "mouthFunnel", "mouthPucker", "eyeLookDownLeft", "eyeLookInLeft",
                            "eyeLookOutLeft", "eyeLookUpLeft", "eyeLookDownRight", "eyeLookInRight",
                            "eyeLookOutRight", "eyeLookUpRight")
assert set(RANGES) | set(DERIVED) | set(UNOBSERVED) == set(ARKIT_BLENDSHAPES)


def ramp(value: float, rest: float, extreme: float) -> float:
    """rest -> 0, extreme -> 1, clipped; works for falling measures (extreme < rest) too."""
    return float(min(1.0, max(0.0, (value - rest) / (extreme - rest))))


def solve_blendshapes(face_points_m: np.ndarray, left_gaze: np.ndarray, right_gaze: np.ndarray) -> np.ndarray:
    """(52,) float32 in ARKIT_BLENDSHAPES order from head-frame landmarks (metres) and per-eye (yaw, pitch)."""
    m = measures(face_points_m)
    out = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
    for shape, (measure, rest, extreme) in RANGES.items():
        out[INDEX[shape]] = ramp(m[measure], rest, extreme)
    lips_apart = ramp(m["lip_gap"], 0.0, LIPS_APART_M)
    narrow = ramp(m["mouth_width"], MOUTH_WIDTH_REST_M, NARROW_MOUTH_M)
    out[INDEX["mouthClose"]] = max(0.0, out[INDEX["jawOpen"]] - lips_apart)
    out[INDEX["mouthFunnel"]] = narrow * lips_apart
    out[INDEX["mouthPucker"]] = narrow * (1.0 - lips_apart)
    for side in ("Left", "Right"):
        out[INDEX[f"mouthPress{side}"]] *= 1.0 - lips_apart
    for side, (yaw, pitch) in (("Left", left_gaze), ("Right", right_gaze)):
        outward = yaw if side == "Left" else -yaw   # +yaw looks to the person's left: out for the left eye
        out[INDEX[f"eyeLookOut{side}"]] = ramp(outward, 0.0, LOOK_SIDEWAYS_RAD)
        out[INDEX[f"eyeLookIn{side}"]] = ramp(-outward, 0.0, LOOK_SIDEWAYS_RAD)
        out[INDEX[f"eyeLookDown{side}"]] = ramp(pitch, 0.0, LOOK_DOWN_RAD)
        out[INDEX[f"eyeLookUp{side}"]] = ramp(-pitch, 0.0, LOOK_UP_RAD)
    return out
