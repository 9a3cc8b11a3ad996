from __future__ import annotations

from twinfer.faces.reading import FaceReading
from twinfer.protocol import game_pb2
from twinfer.streaming.outputs.base import FrameResult, OutputFormat


def fill_face(face: FaceReading, out: game_pb2.FaceResult) -> None:
    """FaceReading -> FaceResult, field for field (same conventions: ARKit face frame, radians, metres)."""
    out.tracked = bool(face.tracked)
    out.score = float(face.score)
    out.head_yaw, out.head_pitch, out.head_roll = (float(v) for v in face.head_rotation)
    out.head_x, out.head_y, out.head_z = (float(v) for v in face.head_translation)
    out.left_eye_yaw, out.left_eye_pitch = (float(v) for v in face.left_eye)
    out.right_eye_yaw, out.right_eye_pitch = (float(v) for v in face.right_eye)
    out.calibration = int(face.calibration)  # CalibrationState mirrors the enum's numbers
    if face.landmarks is not None:
        out.landmarks.extend(face.landmarks.reshape(-1).tolist())


class NativeFormat(OutputFormat):
    """One `twinfer.v1.StreamResult` protobuf per frame: values, labels, sequence, capture and send times, and the
    face (pose, gaze, tracking and calibration state, landmarks when the stream asked) for face_tracker streams."""

    def encode(self, result: FrameResult) -> list[bytes]:
        message = game_pb2.StreamResult(
            stream_id=result.stream_id,
            sequence=result.sequence,
            capture_time_ns=result.capture_time_ns,
            send_time_ns=result.send_time_ns,
            values=result.values.tolist(),
            labels=result.labels,
            model_version=result.model_version,
        )
        if result.face is not None:
            fill_face(result.face, message.face)
        return [message.SerializeToString()]
