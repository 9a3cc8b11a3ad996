"""Login tokens: `v1.<payload>.<tag>`, payload = base64url JSON {"sub": user, "exp": unix seconds}, tag =
base64url HMAC-SHA256 of "v1.<payload>" with the server's secret. Stateless, so any worker can check any token,
and `twinfer token` can mint one offline from the same secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from twinfer.errors import PermissionDenied, Unauthenticated

_PREFIX = "v1"
MAX_TOKEN_CHARS = 4096  # a token is ~100 characters; anything near this is an attack, not a login


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user: str
    expires_at: int  # unix seconds; 0 = never


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    """Issues and verifies tokens with one secret. `now` is injected so expiry is testable."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a token secret is required")
        self._key = secret.encode("utf-8")

    def _tag(self, signed: str) -> str:
        return _b64(hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: str, expires_at: int) -> str:
        payload = _b64(json.dumps({"sub": user, "exp": int(expires_at)}, separators=(",", ":")).encode())
        signed = f"{_PREFIX}.{payload}"
        return f"{signed}.{self._tag(signed)}"

    def verify(self, token: str, now: float) -> TokenClaims:
        if not token.isascii() or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise Unauthenticated("malformed token")
        signed = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._tag(signed), parts[2]):
            raise Unauthenticated("invalid token signature")
        try:
            claims = json.loads(_unb64(parts[1]))
            if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
                raise ValueError("exp")
            user, expires_at = str(claims["sub"]), int(claims["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthenticated("malformed token payload") from None
        if not user:
            raise Unauthenticated("token names no user")
        if expires_at and now >= expires_at:
            raise Unauthenticated("token expired")
        return TokenClaims(user, expires_at)


class Authenticator:
    """The server's login policy. With a secret, a login needs a valid token and every other command needs a
    login. Without one (insecure dev mode), logins are optional and a token is taken as the user name as is."""

    def __init__(self, secret: str) -> None:
        self._authority = TokenAuthority(secret) if secret else None

    @property
    def required(self) -> bool:
        return self._authority is not None

    def authenticate(self, token: str, fallback_user: str, now: float) -> TokenClaims:
        if self._authority is None:
            return TokenClaims(token or fallback_user, 0)
        if not token:
            raise Unauthenticated("a token is required")
        return self._authority.verify(token, now)

    def authenticate_bearer(self, header: str | bytes | None, now: float) -> TokenClaims | None:
        """The HTTP `Authorization` header or gRPC `authorization` metadata: `Bearer <token>`, the same token the
        game protocol logs in with. Returns None when no secret is set (insecure dev mode: nothing is checked)."""
        if self._authority is None:
            return None
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("a token is required (Authorization: Bearer <token>)")
        return self._authority.verify(token.strip(), now)


class AdminCheck:
    """Repository load/unload: the admin token as a bearer token. With no admin token configured they are refused,
    never open: changing what a server serves is an operator's act, not a client's."""

    def __init__(self, admin_token: str) -> None:
        self._expected = f"Bearer {admin_token}".encode() if admin_token else b""

    def check(self, header: str | bytes | None) -> None:
        if not self._expected:
            raise PermissionDenied("repository load/unload is disabled: no admin token is configured "
                                   "(auth.admin_token)")
        given = header.encode("latin-1", "replace") if isinstance(header, str) else (header or b"")
        if not hmac.compare_digest(given.strip(), self._expected):
            raise PermissionDenied("repository load/unload needs the admin token (Authorization: Bearer ...)")
