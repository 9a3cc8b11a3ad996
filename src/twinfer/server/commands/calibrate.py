"""`calibrate`: take the user's neutral face on a face_tracker stream (issue #15). The state is per stream; every
later StreamResult.face reports it, so the reply only says that calibration started and for how long."""

from __future__ import annotations

from twinfer.faces.reading import CalibrationState
from twinfer.protocol import game_pb2
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session


class CalibrateCommand(Command):
    message_type = "calibrate"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        request = message.calibrate
        stream = self.context.stream_manager().get(request.stream_id, session)
        state = stream.calibrate(request.seconds)
        status = reply.calibration_status
        status.stream_id = stream.id
        status.state = int(state)  # the wire enum mirrors CalibrationState's numbers
        status.seconds_left = request.seconds if state == CalibrationState.CALIBRATING else 0.0
        return reply
