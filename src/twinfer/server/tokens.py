"""Login tokens: `v1.<payload>.<tag>`, payload = base64url JSON {"sub": user, "exp": unix seconds}, tag =
base64url HMAC-SHA256 of "v1.<payload>" with the server's secret. Stateless, so any worker can check any token,
and `twinfer token` can mint one offline from the same secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from twinfer.errors import Unauthenticated

_PREFIX = "v1"


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
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise Unauthenticated("malformed token")
        signed = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._tag(signed), parts[2]):
            raise Unauthenticated("invalid token signature")
        try:
            claims = json.loads(_unb64(parts[1]))
            user, expires_at = str(claims["sub"]), int(claims["exp"])
        except (ValueError, KeyError, TypeError):
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
