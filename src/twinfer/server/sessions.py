"""Sessions: who is on which connection, and the rule that one user holds one session at a time."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall

from twinfer.protocol import game_pb2


class SessionTransport(Protocol):
    """What a session needs of its connection: to be kicked, and to pass on server events (request_id 0)."""

    def kick(self, code: int, reason: str) -> None: ...

    def send_event(self, message: game_pb2.ServerMessage) -> None: ...


_ids = itertools.count(1)
_prefix = "s"


def set_worker_index(index: int) -> None:
    """Session ids name their worker (`w1-s7`), so a client and the logs can tell which process serves them."""
    global _prefix
    _prefix = f"w{index}-s" if index >= 0 else "s"


@dataclass(eq=False, slots=True)
class Session:
    connection: SessionTransport
    peer: str
    session_id: str = field(default_factory=lambda: f"{_prefix}{next(_ids)}")
    user: str | None = None
    client_name: str = ""
    in_flight: int = 0
    host: str = ""  # the TCP peer's IP address: where its stream results may go by default
    expiry: IDelayedCall | None = None  # the kick when the login token expires

    def stream_event(self, message: game_pb2.ServerMessage) -> None:
        """A stream of this session closed or dropped frames (StreamManager): tell the client."""
        self.connection.send_event(message)

    def cancel_expiry(self) -> None:
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None

    @property
    def logged_in(self) -> bool:
        return self.user is not None


class SessionRegistry:
    """Every open session, and by user for the logged-in ones."""

    def __init__(self) -> None:
        self._sessions: set[Session] = set()
        self._by_user: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def logged_in(self) -> int:
        return len(self._by_user)

    def add(self, session: Session) -> None:
        self._sessions.add(session)

    def remove(self, session: Session) -> None:
        self._sessions.discard(session)
        self.logout(session)

    def logout(self, session: Session) -> None:
        """The session is no one again (its token expired, or a re-login failed)."""
        session.cancel_expiry()
        if session.user is not None and self._by_user.get(session.user) is session:
            del self._by_user[session.user]
        session.user = None

    def bind_user(self, session: Session, user: str) -> Session | None:
        """Attach `user` to `session`; returns the session it replaces (the caller kicks it), if any."""
        previous = self._by_user.get(user)
        if session.user is not None and session.user != user and self._by_user.get(session.user) is session:
            del self._by_user[session.user]
        session.user = user
        self._by_user[user] = session
        return previous if previous is not session else None

    def all(self) -> list[Session]:
        return list(self._sessions)
