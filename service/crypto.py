"""Raw webhook payloads at rest: Fernet (AES-128-CBC + HMAC-SHA256) under keys from settings, with rotation.

The `cryptography` package's MultiFernet does the work: the first configured key encrypts, every key decrypts,
and `rotate` re-encrypts a token under the first key, so an operator adds a new key in front, runs
`itsm-triage payloads rekey`, and then drops the old key. Without keys the service does not keep raw payloads.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.settings import Settings

PREFIX = "fernet:"  # stored form: PREFIX + token; "" means the payload was not kept


class PayloadKeyError(ValueError):
    """A configured payload key that is not a Fernet key, or a payload no configured key opens."""


class PayloadCipher:
    """Seal and open raw payloads; built once per process from `privacy.payload_keys`."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise PayloadKeyError("no payload key given")
        try:
            self._fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError) as exc:
            raise PayloadKeyError(
                "ITSM_PRIVACY__PAYLOAD_KEYS must hold Fernet keys (32 url-safe base64-encoded bytes), comma-separated;"
                " make one with `itsm-triage payloads new-key`"
            ) from exc
        self._multi = MultiFernet(self._fernets)

    @classmethod
    def from_settings(cls, settings: Settings) -> PayloadCipher | None:
        """The cipher for the configured keys, or None when raw payloads are not to be kept."""
        secret = settings.privacy.payload_keys
        keys = [k for k in (secret.get_secret_value().split(",") if secret else []) if k.strip()]
        return cls(keys) if keys else None

    def seal(self, text: str) -> str:
        """Encrypt under the first key."""
        return PREFIX + self._multi.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """Decrypt a sealed payload with whichever configured key made it."""
        if not stored.startswith(PREFIX):
            raise PayloadKeyError("not a sealed payload")
        try:
            return self._multi.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise PayloadKeyError("no configured key opens this payload (was its key dropped too early?)") from exc

    def is_current(self, stored: str) -> bool:
        """Whether the payload is sealed under the first (current) key already."""
        try:
            self._fernets[0].decrypt(stored[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            return False
        return True

    def rotate(self, stored: str) -> str:
        """The same payload sealed under the first key (MultiFernet.rotate keeps its timestamp)."""
        try:
            return PREFIX + self._multi.rotate(stored[len(PREFIX) :].encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise PayloadKeyError("no configured key opens this payload") from exc


def new_key() -> str:
    """A fresh Fernet key for `privacy.payload_keys`."""
    return Fernet.generate_key().decode("ascii")
