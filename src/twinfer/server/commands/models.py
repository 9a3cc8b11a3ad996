from __future__ import annotations

from twinfer.protocol import game_pb2
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session


class ListModelsCommand(Command):
    """Every model in the repository with its ready versions and state."""

    message_type = "list_models"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        listing = reply.list_models
        for model in self.context.facade.models():
            status = listing.models.add()
            status.name = model.name
            status.versions.extend(str(v) for v in sorted(model.versions))
            status.state = model.state
            status.reason = model.reason
        return reply
