from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from twinfer.faces.reading import FaceReading


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One frame's output, ready to encode."""

    stream_id: int
    sequence: int
    capture_time_ns: int
    send_time_ns: int
    values: np.ndarray  # float32, one per label
    labels: tuple[str, ...]
    model_version: str
    face: FaceReading | None = None  # set by the face tracker: pose, gaze, tracking state
    stream_seconds: float = 0.0  # capture-clock seconds since the stream's first frame (VMC's /VMC/Ext/T)


class OutputFormat(ABC):
    """Encodes a FrameResult into datagrams. `subject` is the stream's name where a format carries one."""

    def __init__(self, subject: str = "twinfer") -> None:
        self.subject = subject

    @abstractmethod
    def encode(self, result: FrameResult) -> list[bytes]: ...
