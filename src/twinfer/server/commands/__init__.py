"""One command class per game-protocol message type, and the one registry that lists them."""

from __future__ import annotations

from twinfer.server.commands.base import Command, CommandRegistry, ServerContext
from twinfer.server.commands.calibrate import CalibrateCommand
from twinfer.server.commands.infer import InferCommand
from twinfer.server.commands.login import LoginCommand
from twinfer.server.commands.model_metadata import ModelMetadataCommand
from twinfer.server.commands.models import ListModelsCommand
from twinfer.server.commands.ping import PingCommand
from twinfer.server.commands.streams import (
    CloseStreamCommand,
    OpenStreamCommand,
    SubscribeCommand,
    UnsubscribeCommand,
)

COMMANDS: tuple[type[Command], ...] = (
    LoginCommand,
    PingCommand,
    ListModelsCommand,
    ModelMetadataCommand,
    InferCommand,
    OpenStreamCommand,
    CloseStreamCommand,
    SubscribeCommand,
    UnsubscribeCommand,
    CalibrateCommand,
)


def default_registry(context: ServerContext) -> CommandRegistry:
    registry = CommandRegistry()
    for command in COMMANDS:
        registry.register(command(context))
    return registry


__all__ = ["COMMANDS", "Command", "CommandRegistry", "ServerContext", "default_registry"]
