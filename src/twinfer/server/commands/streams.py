"""Stream control: open, close, subscribe and unsubscribe receivers. Frames themselves travel over UDP."""

from __future__ import annotations

from twinfer.errors import InvalidInput
from twinfer.protocol import game_pb2
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session
from twinfer.streaming.manager import parse_target


class OpenStreamCommand(Command):
    """Opens a stream owned by this session; the reply says where to send frames and with which key."""

    message_type = "open_stream"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        manager = self.context.stream_manager()
        stream = manager.open(session, message.open_stream, session.host)
        out = reply.open_stream
        out.stream_id = stream.id
        out.udp_host = manager.advertised_host
        out.udp_port = manager.udp_port
        out.key = stream.key
        out.labels.extend(stream.labels)
        out.max_datagram_bytes = manager.max_datagram_bytes
        out.heartbeat_timeout_s = manager.heartbeat_timeout_s
        return reply


class CloseStreamCommand(Command):
    message_type = "close_stream"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        manager = self.context.stream_manager()
        stream = manager.get(message.close_stream.stream_id, session)
        manager.close(stream.id)
        reply.stream_ack.stream_id = stream.id
        return reply


class SubscribeCommand(Command):
    """Adds a receiver to a running stream (the next frame goes to it too), if the receiver rule allows it."""

    message_type = "subscribe"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        manager = self.context.stream_manager()
        stream = manager.get(message.subscribe.stream_id, session)
        manager.subscribe(stream, parse_target(message.subscribe.target), session.host)
        reply.stream_ack.stream_id = stream.id
        reply.stream_ack.targets = len(stream.targets)
        return reply


class UnsubscribeCommand(Command):
    message_type = "unsubscribe"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        stream = self.context.stream_manager().get(message.unsubscribe.stream_id, session)
        if not stream.remove_target(parse_target(message.unsubscribe.target)):
            raise InvalidInput("that receiver is not subscribed to this stream")
        reply.stream_ack.stream_id = stream.id
        reply.stream_ack.targets = len(stream.targets)
        return reply
