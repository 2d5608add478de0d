"""Secrets at rest and in cookies: scrypt password hashes, hashed API tokens, HMAC-signed session cookies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

# scrypt cost: n=2**14, r=8 uses 16 MiB and ~50 ms per check, enough to make offline guessing expensive.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
TOKEN_PREFIX = "itsm_"


def hash_password(password: str) -> str:
    """A salted scrypt hash in a self-describing format: scrypt$n$r$p$salt$hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check of a password against a stored scrypt hash (False for malformed or empty hashes)."""
    if not stored:
        # Spend the same work as a real check so timing does not reveal which usernames exist.
        hashlib.scrypt(password.encode(), salt=b"0" * 16, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_api_token() -> str:
    """A fresh high-entropy API token (shown once; only its hash is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    """SHA-256 of a token: tokens carry 256 bits of entropy, so a fast hash cannot be brute-forced."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_csrf_token() -> str:
    """A random per-session CSRF token."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class SessionData:
    """What the signed session cookie carries: the user id (None before login), CSRF token and expiry."""

    user_id: int | None
    csrf: str
    expires_at: int
    extra: dict[str, Any]


class SessionSigner:
    """Signs and verifies session cookies with HMAC-SHA256; tampered or expired cookies read as None."""

    def __init__(self, secret: str, *, max_age_s: int) -> None:
        self._key = hashlib.sha256(b"itsm-review-session:" + secret.encode()).digest()
        self.max_age_s = max_age_s

    def dumps(self, data: SessionData) -> str:
        """Serialise and sign a session."""
        raw = json.dumps({"u": data.user_id, "c": data.csrf, "e": data.expires_at, "x": data.extra}).encode()
        body = _b64(raw)
        return f"{body}.{self._sign(body)}"

    def loads(self, cookie: str | None) -> SessionData | None:
        """Verify and parse a cookie; None when missing, forged or expired."""
        if not cookie or "." not in cookie or len(cookie) > 4096:
            return None
        body, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            obj = json.loads(_unb64(body))
            data = SessionData(
                user_id=obj["u"], csrf=str(obj["c"]), expires_at=int(obj["e"]), extra=dict(obj.get("x") or {})
            )
        except (ValueError, KeyError, TypeError):
            return None
        if data.expires_at < time.time():
            return None
        return data

    def new(self, user_id: int | None, extra: dict[str, Any] | None = None) -> SessionData:
        """A new session with a fresh CSRF token (rotated at login to defeat session fixation)."""
        return SessionData(
            user_id=user_id,
            csrf=new_csrf_token(),
            expires_at=int(time.time()) + self.max_age_s,
            extra=extra or {},
        )

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
