"""Live Link Face packets for Unreal (UDP, default port 11111), big-endian:

    uint8 version (6) | int32 len + device id | int32 len + subject name
    | int32 frame | float32 sub-frame | int32 rate numerator | int32 rate denominator
    | uint8 count (61) | 61 x float32: 52 blendshapes in EARFaceBlendShape order (the ARKit order),
      then head yaw, pitch, roll, left eye yaw, pitch, roll, right eye yaw, pitch, roll

The 9 rotation channels are in the units Epic's own pipeline sends: each angle in degrees divided by 180, so
-1..1 covers -180..180 degrees (radians / pi). Source: Unreal's AppleARKitFaceSupport plugin, which the Live Link
Face app is built on, `ToBlendShapeMap` in AppleARKitFaceMeshConversion.h ("Map the -180..180 range to -1..1":
`HeadYaw = FRotator(Transform.GetRotation()).Yaw / 180.f`, the same for pitch, roll and each eye's transform).
Signs: that code converts ARKit's transform to Unreal's axes (ToFTransform: quaternion (-z, x, y, -w)) and, when the
face is not mirrored (the default `EARFaceTrackingDirection::FaceRelative`), negates yaw and roll; worked through,
the three channels keep ARKit's signs (positive yaw: the person turns to their own left; positive pitch: looks down;
positive roll: tilts towards their own right shoulder), which is what twinfer's FaceReading already holds. Eye roll
is not measured and stays 0.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.faces.reading import FaceReading
from twinfer.streaming.outputs.base import FrameResult, OutputFormat

VERSION = 6
FRAME_RATE = 60
EXTRA_CHANNELS = ("headYaw", "headPitch", "headRoll", "leftEyeYaw", "leftEyePitch", "leftEyeRoll",
                  "rightEyeYaw", "rightEyePitch", "rightEyeRoll")
CHANNELS = ARKIT_BLENDSHAPES + EXTRA_CHANNELS  # 61
ROTATION_SLOT = len(ARKIT_BLENDSHAPES)  # 52: where the 9 rotation channels start


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">i", len(data)) + data


def rotation_channels(face: FaceReading) -> np.ndarray:
    """The 9 rotation channels (head yaw, pitch, roll, each eye yaw, pitch, roll) in Live Link Face units."""
    head = np.asarray(face.head_rotation, np.float64)
    left = np.asarray(face.left_eye, np.float64)
    right = np.asarray(face.right_eye, np.float64)
    radians = np.array([head[0], head[1], head[2], left[0], left[1], 0.0, right[0], right[1], 0.0])
    return (radians / math.pi).astype(np.float32)


class LiveLinkFormat(OutputFormat):
    def __init__(self, subject: str = "twinfer") -> None:
        super().__init__(subject)
        self._index_cache: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None

    def _mapping(self, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Which result values land in which of the 61 slots (by name; unknown labels are ignored)."""
        if self._index_cache is None or self._index_cache[0] != labels:
            slots = {name: i for i, name in enumerate(CHANNELS)}
            pairs = [(i, slots[name]) for i, name in enumerate(labels) if name in slots]
            src = np.array([p[0] for p in pairs], dtype=np.intp)
            dst = np.array([p[1] for p in pairs], dtype=np.intp)
            self._index_cache = (labels, src, dst)
        return self._index_cache[1], self._index_cache[2]

    def encode(self, result: FrameResult) -> list[bytes]:
        values = np.zeros(len(CHANNELS), dtype=">f4")
        src, dst = self._mapping(result.labels)
        values[dst] = result.values[src]
        if result.face is not None:
            values[ROTATION_SLOT:] = rotation_channels(result.face)
        seconds = result.capture_time_ns / 1e9
        frame = int(seconds * FRAME_RATE)
        sub_frame = seconds * FRAME_RATE - frame
        packet = (
            struct.pack(">B", VERSION)
            + _string(f"twinfer-{result.stream_id}")
            + _string(self.subject)
            + struct.pack(">ifiiB", frame & 0x7FFFFFFF, sub_frame, FRAME_RATE, 1, len(CHANNELS))
            + values.tobytes()
        )
        return [packet]


@dataclass(frozen=True, slots=True)
class LiveLinkPacket:
    device: str
    subject: str
    frame: int
    sub_frame: float
    rate: tuple[int, int]
    values: tuple[float, ...]

    @property
    def head_degrees(self) -> tuple[float, float, float]:
        """Head yaw, pitch, roll in degrees (the channels are degrees / 180)."""
        return tuple(v * 180.0 for v in self.values[ROTATION_SLOT : ROTATION_SLOT + 3])  # type: ignore[return-value]


def parse_packet(data: bytes) -> LiveLinkPacket:
    """The inverse of `LiveLinkFormat.encode`, for `twinfer receive --livelink`; raises ValueError on a packet a
    Live Link receiver would drop (version not 6, count not 61, truncated)."""
    try:
        if data[0] != VERSION:
            raise ValueError(f"version {data[0]}, expected {VERSION}")
        offset = 1
        strings = []
        for _ in range(2):
            (n,) = struct.unpack_from(">i", data, offset)
            if n < 0 or offset + 4 + n > len(data):
                raise ValueError("string length out of range")
            strings.append(data[offset + 4 : offset + 4 + n].decode("utf-8"))
            offset += 4 + n
        frame, sub_frame, numerator, denominator, count = struct.unpack_from(">ifiiB", data, offset)
        offset += 17
        if count != len(CHANNELS):
            raise ValueError(f"{count} values, expected {len(CHANNELS)}")
        values = struct.unpack_from(f">{count}f", data, offset)
        if offset + 4 * count != len(data):
            raise ValueError("trailing bytes")
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed Live Link packet: {exc}") from None
    return LiveLinkPacket(strings[0], strings[1], frame, sub_frame, (numerator, denominator), values)
