from __future__ import annotations

from twinfer.protocol import game_pb2
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session

SESSION_REPLACED = game_pb2.ErrorCode.ERROR_CODE_SESSION_REPLACED


class LoginCommand(Command):
    """Authenticates the session. A second login of the same user kicks the earlier session, with a reason."""

    message_type = "login"
    requires_login = False

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        login = message.login
        ctx = self.context
        claims = ctx.auth.authenticate(login.token, f"anonymous-{session.session_id}", ctx.clock.seconds())
        session.client_name = login.client_name
        replaced = ctx.sessions.bind_user(session, claims.user)
        if replaced is not None:
            replaced.connection.kick(SESSION_REPLACED, f"user {claims.user!r} logged in from {session.peer}")
        reply.login.session_id = session.session_id
        reply.login.user = claims.user
        reply.login.expires_at_unix = claims.expires_at
        return reply
