from __future__ import annotations

import pytest

from twinfer.errors import Unauthenticated
from twinfer.server.sessions import Session, SessionRegistry
from twinfer.security.tokens import Authenticator, TokenAuthority


def test_issued_token_verifies_until_it_expires():
    authority = TokenAuthority("s3cret")
    token = authority.issue("ann", expires_at=100)
    assert authority.verify(token, now=99.9).user == "ann"
    with pytest.raises(Unauthenticated, match="expired"):
        authority.verify(token, now=100)


@pytest.mark.parametrize("mangle", [
    lambda t: t + "x",
    lambda t: t.replace("v1.", "v2.", 1),
    lambda t: "v1.e30." + t.split(".")[2],  # someone else's payload with this tag
    lambda t: "garbage",
    lambda t: "",
])
def test_tampered_tokens_are_refused(mangle):
    authority = TokenAuthority("s3cret")
    with pytest.raises(Unauthenticated):
        authority.verify(mangle(authority.issue("ann", 0)), now=0)


def test_a_token_from_another_secret_is_refused():
    with pytest.raises(Unauthenticated, match="signature"):
        TokenAuthority("a").verify(TokenAuthority("b").issue("ann", 0), now=0)


def test_insecure_mode_takes_the_token_as_user_name_and_needs_no_login():
    auth = Authenticator("")
    assert not auth.required
    assert auth.authenticate("", "anonymous-s1", 0).user == "anonymous-s1"
    assert auth.authenticate("bob", "anonymous-s1", 0).user == "bob"


class _Conn:
    def kick(self, code: int, reason: str) -> None: ...


def test_binding_a_user_twice_returns_the_session_to_kick():
    registry = SessionRegistry()
    a, b = Session(_Conn(), "p1"), Session(_Conn(), "p2")
    registry.add(a)
    registry.add(b)
    assert registry.bind_user(a, "ann") is None
    assert registry.bind_user(b, "ann") is a
    registry.remove(a)  # the kicked session leaving must not unbind its successor
    assert registry.logged_in == 1
    registry.remove(b)
    assert registry.logged_in == 0 and len(registry) == 0
