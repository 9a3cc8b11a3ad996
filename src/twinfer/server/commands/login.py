from __future__ import annotations

from twinfer.errors import Unauthenticated, UnsupportedProtocol
from twinfer.protocol import game_pb2
from twinfer.protocol.version import PROTOCOL_VERSION, negotiate
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session

SESSION_REPLACED = game_pb2.ErrorCode.ERROR_CODE_SESSION_REPLACED
UNAUTHENTICATED = game_pb2.ErrorCode.ERROR_CODE_UNAUTHENTICATED


class LoginCommand(Command):
    """Authenticates the session. A second login of the same user kicks the earlier session, with a reason.

    A token is good until its `exp`, not just at login: the session is kicked (UNAUTHENTICATED, "token expired")
    when it expires, and a re-login moves that deadline. A failed login logs the session out, so a bad re-login
    never leaves an earlier identity in force. The protocol version is checked first (UNSUPPORTED_PROTOCOL): the
    reply carries the server's own version and its capabilities.
    """

    message_type = "login"
    requires_login = False

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        login = message.login
        ctx = self.context
        now = ctx.clock.seconds()
        try:
            negotiate(login.protocol_version)
            claims = ctx.auth.authenticate(login.token, f"anonymous-{session.session_id}", now)
        except (Unauthenticated, UnsupportedProtocol):
            ctx.sessions.logout(session)
            raise
        session.client_name = login.client_name
        replaced = ctx.sessions.bind_user(session, claims.user)
        if replaced is not None:
            replaced.connection.kick(SESSION_REPLACED, f"user {claims.user!r} logged in from {session.peer}")
        session.cancel_expiry()
        if claims.expires_at:
            session.expiry = ctx.clock.callLater(max(claims.expires_at - now, 0.0), session.connection.kick,
                                                 UNAUTHENTICATED, "token expired")
        reply.login.session_id = session.session_id
        reply.login.user = claims.user
        reply.login.expires_at_unix = claims.expires_at
        reply.login.protocol_version = PROTOCOL_VERSION
        if ctx.capabilities is not None:
            reply.login.capabilities.CopyFrom(ctx.capabilities)
        return reply
