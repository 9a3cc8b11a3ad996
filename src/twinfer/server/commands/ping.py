from __future__ import annotations

import time

from twinfer.protocol import game_pb2
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session


class PingCommand(Command):
    """Echoes the client's time with the server's wall clock; any frame, a ping included, keeps a session alive."""

    message_type = "ping"
    requires_login = False

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        reply.pong.client_time_ns = message.ping.client_time_ns
        reply.pong.server_time_ns = time.time_ns()
        return reply
