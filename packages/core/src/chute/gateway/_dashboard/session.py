"""The dashboard's session: a signed, HttpOnly, SameSite=Strict cookie, and its CSRF token.

The cookie holds no key. It holds a random nonce, an expiry and, once the operator signed in
with a global API key, a *tag* of that key (an HMAC of the key's SHA-256 under the signing
secret): the key itself is sent once, in the login form's POST body, and never again, neither
to the browser nor back. A session stays valid only while its key is still one of the
gateway's keys (remove a key from the file, restart: its sessions end).

The CSRF token is an HMAC of the session's nonce: the page gets it in a ``<meta>`` tag and
sends it back in ``X-CSRF-Token`` (or the login form's hidden field) with every POST. A page
of another origin can neither read it nor, with SameSite=Strict, send the cookie.

The signing secret is ``$CHUTE_UI_SECRET`` when set; else derived from the global keys (so
every replica of a keyed gateway accepts the others' sessions); else, on an open gateway,
random per process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from typing import NamedTuple

import msgspec

#: The cookie's name and path: sent back only to the dashboard's own routes.
COOKIE = "chute_ui"
COOKIE_PATH = "/ui"
#: How long a session lasts, in seconds (12 hours).
SESSION_SECONDS = 12 * 3600
#: The environment variable that fixes the signing secret.
SECRET_ENV = "CHUTE_UI_SECRET"


class Session(NamedTuple):
    nonce: str
    expires: float
    #: The tag of the key the operator signed in with ("" while signed out).
    key_tag: str = ""


class _Payload(msgspec.Struct, array_like=True):
    nonce: str
    expires: float
    key_tag: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Makes and checks session cookies and CSRF tokens for one gateway."""

    def __init__(self, key_digests: Iterable[bytes], secret: str | None = None) -> None:
        digests = sorted(key_digests)
        if secret is None:
            secret = os.environ.get(SECRET_ENV) or None
        if secret is not None:
            self._secret = hashlib.sha256(b"chute-ui:" + secret.encode()).digest()
        elif digests:
            self._secret = hmac.new(b"chute-ui-session", b"".join(digests), "sha256").digest()
        else:
            self._secret = secrets.token_bytes(32)
        self._digests = tuple(digests)

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose + b"\0" + data, "sha256").digest()

    def key_tag(self, digest: bytes) -> str:
        """The tag a session keeps for the key whose SHA-256 is ``digest``."""
        return _b64(self._mac(b"key", digest)[:16])

    def new(self, key_digest: bytes | None = None) -> Session:
        """A fresh session, signed in with the key of ``key_digest`` when given."""
        tag = "" if key_digest is None else self.key_tag(key_digest)
        return Session(secrets.token_urlsafe(16), time.time() + SESSION_SECONDS, tag)

    def encode(self, session: Session) -> str:
        """The cookie value: the payload and its MAC."""
        raw = msgspec.json.encode(_Payload(*session))
        return f"{_b64(raw)}.{_b64(self._mac(b'session', raw))}"

    def decode(self, value: str | None) -> Session | None:
        """The session of a cookie value, or None when it is missing, forged, expired, or
        signed in with a key the gateway no longer has."""
        if not value:
            return None
        raw_text, _, mac_text = value.partition(".")
        try:
            raw, mac = _unb64(raw_text), _unb64(mac_text)
            if not hmac.compare_digest(mac, self._mac(b"session", raw)):
                return None
            payload = msgspec.json.decode(raw, type=_Payload)
        except (ValueError, msgspec.DecodeError):
            return None
        session = Session(payload.nonce, payload.expires, payload.key_tag)
        if session.expires <= time.time():
            return None
        if session.key_tag and not self.signed_in(session):
            return None
        return session

    def signed_in(self, session: Session | None) -> bool:
        """True when ``session`` was signed in with a key the gateway still has."""
        if session is None or not session.key_tag:
            return False
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(session.key_tag, self.key_tag(digest))
        return matched

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.nonce.encode()))

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(session))


def cookie_header(value: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> bytes:
    """The ``Set-Cookie`` header value for the session cookie."""
    parts = [
        f"{COOKIE}={value}",
        f"Path={COOKIE_PATH}",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")


def cookie_value(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The session cookie's value among the request's ``Cookie`` headers."""
    for name, value in headers:
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE:
                return val
    return None
