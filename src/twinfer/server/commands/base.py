"""The Command pattern for the game protocol: one class per ClientMessage type, found in one registry.

A connection only frames bytes and calls `registry.get(kind).execute(...)`. Adding a message type touches the
.proto, one new module in this package and the `default_registry` list, nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from twinfer.inference.facade import InferenceFacade
from twinfer.protocol import game_pb2
from twinfer.server.sessions import Session, SessionRegistry
from twinfer.security.tokens import Authenticator

if TYPE_CHECKING:
    from twinfer.streaming.manager import StreamManager

Reply = game_pb2.ServerMessage


@dataclass(slots=True)
class ServerContext:
    """What commands may use: the facade, the sessions, the login policy, the clock and the streams."""

    facade: InferenceFacade
    sessions: SessionRegistry
    auth: Authenticator
    clock: IReactorTime
    streams: StreamManager | None = None
    capabilities: game_pb2.Capabilities | None = None  # what LoginResponse advertises; the factory fills it

    def stream_manager(self) -> StreamManager:
        from twinfer.errors import Unavailable

        if self.streams is None:
            raise Unavailable("streams are disabled on this server (udp_port is -1)")
        return self.streams


class Command(ABC):
    """Handles one message type. `execute` fills `reply` (request_id is set by the caller) and returns it, or a
    Deferred firing with it; it raises (or fails with) a TwinferError for the client to see."""

    message_type: ClassVar[str]  # the ClientMessage `body` oneof field it handles
    requires_login: ClassVar[bool] = True

    def __init__(self, context: ServerContext) -> None:
        self.context = context

    @abstractmethod
    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply | Deferred[Reply]:
        ...


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(self, command: Command) -> None:
        kind = command.message_type
        if kind not in {f.name for f in game_pb2.ClientMessage.DESCRIPTOR.oneofs_by_name["body"].fields}:
            raise ValueError(f"{type(command).__name__} handles {kind!r}, which ClientMessage does not define")
        if kind in self._commands:
            raise ValueError(f"two commands for {kind!r}")
        self._commands[kind] = command

    def get(self, kind: str | None) -> Command | None:
        return self._commands.get(kind) if kind else None

    def kinds(self) -> list[str]:
        return sorted(self._commands)
