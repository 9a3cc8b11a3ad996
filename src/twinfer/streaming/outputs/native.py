from __future__ import annotations

from twinfer.protocol import game_pb2
from twinfer.streaming.outputs.base import FrameResult, OutputFormat


class NativeFormat(OutputFormat):
    """One `twinfer.v1.StreamResult` protobuf per frame: values, labels, sequence, capture and send times."""

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
        return [message.SerializeToString()]
