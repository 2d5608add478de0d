"""Protocols the core depends on; connectors and the model adapter implement them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from service.domain.schemas import CanonicalTicket, DraftResult, NormalizedEvent, TriageResult, WriteBack, WriteOutcome


class WebhookParser(Protocol):
    """Verifies and normalises one source's webhook deliveries."""

    source: str

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> None:
        """Raise InvalidSignature unless the raw body is authentic."""
        ...

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str]) -> str:
        """The sender's id for this delivery (stable across its retries)."""
        ...

    def parse(self, payload: object, *, delivery_id: str) -> NormalizedEvent:
        """Normalise a verified, JSON-decoded body; raise InvalidPayload if it is not one we understand."""
        ...


class Triager(Protocol):
    """Runs the model over a batch of tickets: labels first (`classify`), reply suggestions after (`draft`)."""

    def classify(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        """Labels with probabilities, one result per ticket, in order (no draft: see `draft`)."""
        ...

    def draft(
        self, tickets: Sequence[CanonicalTicket], evidence: Sequence[str | None] | None = None
    ) -> list[DraftResult]:
        """A reply suggestion per ticket, in order (`draft_reply` None where there is nothing to suggest);
        `evidence` per ticket: quoted knowledge-base passages for a drafted reply (None: nothing above threshold)."""
        ...


class TicketWriter(Protocol):
    """Writes triage results and approved replies back to one ITSM system, exactly once per idempotency key."""

    source: str

    def write(self, action: WriteBack) -> WriteOutcome:
        """Apply one write; raise TransientUpstream / OutcomeUnknown / PermanentUpstream on failure."""
        ...
