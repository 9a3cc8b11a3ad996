"""VMC protocol (OSC over UDP, DESIGN §8): one frame as OSC bundles of at most 1200 bytes, each useful on its own.

Every bundle of a frame starts with `/VMC/Ext/OK (i loaded, i calibration state, i calibration mode, i tracking
status)` and `/VMC/Ext/T (f seconds)` and ends with `/VMC/Ext/Blend/Apply`; the first bundle also carries
`/VMC/Ext/Root/Pos` and the `Head`, `LeftEye` and `RightEye` bones (face_tracker streams); between them, as many
`/VMC/Ext/Blend/Val (s name, f value)` as fit. Why Apply in every bundle (issue #19): 52 shapes need about 2.7 KB,
so a frame spans three bundles, and with one Apply at the end a lost last bundle loses the whole frame while a lost
earlier one applies half a frame. VMC receivers (EVMC4U's ExternalReceiver, VSeeFace, VirtualMotionCapture) keep
each Val in a name -> value table and push the whole table to the avatar on Apply, so an Apply per bundle updates
the shapes that bundle carried and keeps the others at their last value: a lost bundle leaves its shapes one frame
stale, never zeroed, and the rest of the frame still lands. OK and T in every bundle cost 64 bytes and let a
receiver (and twinfer's own `receive`) know each bundle's frame and tracking state whichever bundles arrive.

Values: the axes and signs of the bones are documented in `unity_pose`; `/VMC/Ext/OK`'s calibration state uses
VMC's numbers (0 uncalibrated, 1 waiting, 2 calibrating, 3 calibrated), calibration mode 0 (normal); tracking
status 1 while a face is tracked (and always for models that track no face), 0 when it is lost. T is seconds of
the capture clock since the stream's first frame. Every number is an OSC float32 (`f`) or int32 (`i`) built from
a Python float or int (python-osc refuses numpy scalars, some receivers ignore ints where they expect floats).
"""

from __future__ import annotations

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.streaming.outputs.base import FrameResult, OutputFormat
from twinfer.streaming.outputs.unity_pose import unity_rotation

MAX_BUNDLE_BYTES = 1200  # no IP fragmentation on tunnels and VPNs (DESIGN §8)
_BUNDLE_OVERHEAD = 16  # "#bundle\0" + timetag
_ELEMENT_OVERHEAD = 4  # size prefix of each element

VMC_CALIBRATION_STATE = {CalibrationState.NONE: 0, CalibrationState.CALIBRATING: 2, CalibrationState.CALIBRATED: 3}
CALIBRATION_MODE_NORMAL = 0
IDENTITY = (0.0, 0.0, 0.0, 1.0)
ORIGIN = (0.0, 0.0, 0.0)
# Bone/Pos carries a local position too, and EVMC4U applies it by default (BonePositionSynchronize): zeros would
# sink the head into the neck and the eyes into the head. A face-only sender cannot know the avatar, so these are a
# typical humanoid's offsets (metres, Unity axes: the avatar's left eye is at -x), close enough that such receivers
# keep a face; for an exact fit turn position sync off in the receiver (rotations are what twinfer measures).
LOCAL_POSITIONS = {"Head": (0.0, 0.1, 0.0), "LeftEye": (-0.031, 0.065, 0.045), "RightEye": (0.031, 0.065, 0.045)}


def message(address: str, *args: object) -> OscMessage:
    """One OSC message; str -> s, float -> f, int -> i (never numpy scalars: convert first)."""
    builder = OscMessageBuilder(address=address)
    for value in args:
        tag = "s" if isinstance(value, str) else "f" if isinstance(value, float) else "i"
        builder.add_arg(value, tag)
    return builder.build()


def bone(name: str, rotation: tuple[float, float, float, float]) -> OscMessage:
    """`/VMC/Ext/Bone/Pos`: a typical local position (LOCAL_POSITIONS) and the local rotation x, y, z, w."""
    return message("/VMC/Ext/Bone/Pos", name, *LOCAL_POSITIONS[name], *rotation)


def face_bones(face: FaceReading) -> list[OscMessage]:
    """Root at rest, the head from the head pose, each eye from its gaze (yaw, pitch; no roll)."""
    yaw, pitch, roll = (float(v) for v in face.head_rotation)
    return [
        message("/VMC/Ext/Root/Pos", "root", *ORIGIN, *IDENTITY),
        bone("Head", unity_rotation(yaw, pitch, roll)),
        bone("LeftEye", unity_rotation(float(face.left_eye[0]), float(face.left_eye[1]))),
        bone("RightEye", unity_rotation(float(face.right_eye[0]), float(face.right_eye[1]))),
    ]


class VmcFormat(OutputFormat):
    def encode(self, result: FrameResult) -> list[bytes]:
        face = result.face
        tracked = 1 if face is None or face.tracked else 0
        calibration = VMC_CALIBRATION_STATE[face.calibration if face is not None else CalibrationState.NONE]
        header = [message("/VMC/Ext/OK", 1, calibration, CALIBRATION_MODE_NORMAL, tracked),
                  message("/VMC/Ext/T", float(result.stream_seconds))]
        first = face_bones(face) if face is not None else []
        values = [message("/VMC/Ext/Blend/Val", name, float(value))
                  for name, value in zip(result.labels, result.values.tolist())]
        return pack_frame(header, first, values, message("/VMC/Ext/Blend/Apply"))


def _size(messages: list[OscMessage]) -> int:
    return sum(_ELEMENT_OVERHEAD + m.size for m in messages)


def pack_frame(header: list[OscMessage], first: list[OscMessage], values: list[OscMessage],
               apply: OscMessage) -> list[bytes]:
    """Bundles of header + (first bundle only: `first`) + as many values as fit + apply, order kept, each at most
    MAX_BUNDLE_BYTES; raises ValueError if the fixed part alone does not fit (it is a few hundred bytes)."""
    fixed = _BUNDLE_OVERHEAD + _size(header) + _size([apply])
    out: list[bytes] = []
    current, size = list(first), fixed + _size(first)
    if size > MAX_BUNDLE_BYTES:
        raise ValueError(f"VMC header and bones need {size} bytes, above {MAX_BUNDLE_BYTES}")
    for value in values:
        need = _ELEMENT_OVERHEAD + value.size
        if fixed + need > MAX_BUNDLE_BYTES:
            raise ValueError(f"one VMC value needs {fixed + need} bytes with its header")
        if size + need > MAX_BUNDLE_BYTES:
            out.append(_build(header + current + [apply]))
            current, size = [], fixed
        current.append(value)
        size += need
    out.append(_build(header + current + [apply]))
    return out


def _build(messages: list[OscMessage]) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for m in messages:
        builder.add_content(m)
    return builder.build().dgram
