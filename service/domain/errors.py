"""DomainError tree: each error says what went wrong in words an operator can act on."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidSignature(DomainError):
    """The webhook's signature is missing, malformed, stale or wrong (answer 401)."""


class InvalidPayload(DomainError):
    """The webhook body is not a payload we understand (answer 400/422)."""


class DuplicateEvent(DomainError):
    """The delivery was already stored (answer 200, enqueue nothing)."""


class UpstreamError(DomainError):
    """A call to the ITSM tool failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientUpstream(UpstreamError):
    """Worth retrying: 429, 5xx, timeouts, connection errors."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class PermanentUpstream(UpstreamError):
    """Retrying cannot help: other 4xx (dead-letter with the reason)."""


class OutcomeUnknown(TransientUpstream):
    """The request may have been applied (timeout or lost response after sending): look before writing again."""


class Conflict(DomainError):
    """Someone else changed the row first (answer 409)."""
