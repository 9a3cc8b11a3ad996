"""Live Link Face packets for Unreal (UDP, default port 11111), big-endian:

    uint8 version (6) | int32 len + device id | int32 len + subject name
    | int32 frame | float32 sub-frame | int32 rate numerator | int32 rate denominator
    | uint8 count (61) | 61 x float32: 52 blendshapes in EARFaceBlendShape order (the ARKit order),
      then head yaw, pitch, roll, left eye yaw, pitch, roll, right eye yaw, pitch, roll
"""

from __future__ import annotations

import struct

import numpy as np

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.streaming.outputs.base import FrameResult, OutputFormat

VERSION = 6
FRAME_RATE = 60
EXTRA_CHANNELS = ("headYaw", "headPitch", "headRoll", "leftEyeYaw", "leftEyePitch", "leftEyeRoll",
                  "rightEyeYaw", "rightEyePitch", "rightEyeRoll")
CHANNELS = ARKIT_BLENDSHAPES + EXTRA_CHANNELS  # 61


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">i", len(data)) + data


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
