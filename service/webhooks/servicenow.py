"""ServiceNow Business Rule webhooks (our `itsm-webhook/v1` contract): verify, normalise."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from service.domain.errors import InvalidPayload, InvalidSignature
from service.domain.schemas import CanonicalTicket, FieldChange, NormalizedEvent
from service.settings import Settings
from service.webhooks.common import as_dict, as_str, bounded_text, delivery_header, parse_time

SCHEMA = "itsm-webhook/v1"
TRIAGE_EVENTS = {"incident.created"}
UPDATE_EVENTS = {"incident.updated"}


class ServiceNowWebhookParser:
    """Verifies `X-SN-Signature` = base64(HMAC-SHA256(secret, ts + "." + body)) within the replay window."""

    source = "servicenow"

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._secrets = [s for s in (settings.servicenow.webhook_secret, settings.servicenow.webhook_secret_next) if s]
        self._window = settings.servicenow.replay_window_s
        self._integration_user = settings.servicenow.integration_user
        self._category_label = settings.category_label_field
        # (impact, urgency) -> our priority label, so a person's impact/urgency change is a priority correction.
        self._priority_labels = {tuple(pair): label for label, pair in settings.servicenow.priority_map.items()}
        self._category_labels = {value.lower(): label for label, value in settings.servicenow.category_map.items()}
        self._clock = clock

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> None:
        """Check timestamp freshness, then the signature, in constant time."""
        stamp = (headers.get("x-sn-timestamp") or "").strip()
        given = (headers.get("x-sn-signature") or "").strip()
        if not stamp or not given:
            raise InvalidSignature("missing X-SN-Timestamp or X-SN-Signature header")
        if not stamp.isdigit() or len(stamp) > 12:
            raise InvalidSignature("X-SN-Timestamp must be UNIX seconds")
        if abs(self._clock() - int(stamp)) > self._window:
            raise InvalidSignature(f"X-SN-Timestamp is more than {self._window} s away from now (replay?)")
        try:
            given_raw = base64.b64decode(given, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSignature("X-SN-Signature is not valid base64") from None
        if not self._secrets:
            raise InvalidSignature("no ServiceNow webhook secret is configured")
        signed = stamp.encode() + b"." + raw_body
        if not any(hmac.compare_digest(_mac(secret, signed), given_raw) for secret in self._secrets):
            raise InvalidSignature("X-SN-Signature does not match the body")

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str]) -> str:
        """X-SN-Event-Id (`incident:<sys_id>:<sys_mod_count>`), else a hash of the signed body."""
        return delivery_header(headers, "x-sn-event-id") or ("sha256:" + hashlib.sha256(raw_body).hexdigest())

    def parse(self, payload: object, *, delivery_id: str) -> NormalizedEvent:
        """Normalise one verified webhook body."""
        body = as_dict(payload, "body")
        if body.get("schema") != SCHEMA:
            raise InvalidPayload(f"schema must be {SCHEMA!r}")
        event = as_str(body.get("event_type"), "event_type", required=True, allow_int=False)
        actor = as_str(body.get("sys_updated_by"), "sys_updated_by") or None
        base: dict[str, Any] = {
            "source": self.source,
            "delivery_id": delivery_id,
            "event_type": event,
            "actor": actor,
        }
        if body.get("table", "incident") != "incident" or event not in TRIAGE_EVENTS | UPDATE_EVENTS:
            return NormalizedEvent(**base, action="ignore", ignore_reason=f"event type {event!r} is not handled")
        ticket = self._ticket(body)
        if actor and actor == self._integration_user:
            return NormalizedEvent(**base, action="ignore", ignore_reason="own_echo", ticket=ticket)
        if event in TRIAGE_EVENTS:
            return NormalizedEvent(**base, action="triage", ticket=ticket)
        return NormalizedEvent(**base, action="update", ticket=ticket, changes=self._changes(body, ticket))

    def _ticket(self, body: dict[str, Any]) -> CanonicalTicket:
        """Canonical form of the incident record."""
        record = as_dict(body.get("record"), "record")
        sys_id = as_str(body.get("sys_id"), "sys_id", required=True)
        text, truncated = bounded_text(as_str(record.get("description"), "record.description"))
        instance = as_str(body.get("instance"), "instance").rstrip("/")
        mod_count = as_str(body.get("sys_mod_count"), "sys_mod_count") or "0"
        if not mod_count.isdigit() or len(mod_count) > 15:
            raise InvalidPayload("sys_mod_count must be a non-negative integer")
        caller = record.get("caller_id")
        group = record.get("assignment_group")
        return CanonicalTicket(
            source=self.source,
            external_id=sys_id[:200],
            external_key=(as_str(body.get("number"), "number") or sys_id)[:200],
            url=f"{instance}/nav_to.do?uri=incident.do?sys_id={sys_id}"[:2000]
            if instance.startswith("https://")
            else None,
            subject=bounded_text(as_str(record.get("short_description"), "record.short_description"), limit=1000)[0],
            body=text,
            body_truncated=truncated,
            reporter=_display(caller),
            priority=as_str(record.get("priority"), "record.priority")[:100] or None,
            category=as_str(record.get("category"), "record.category")[:200] or None,
            status=as_str(record.get("state"), "record.state")[:100] or None,
            extra={
                k: v
                for k, v in {
                    "impact": as_str(record.get("impact"), "record.impact")[:20],
                    "urgency": as_str(record.get("urgency"), "record.urgency")[:20],
                    "subcategory": as_str(record.get("subcategory"), "record.subcategory")[:200],
                    "assignment_group": _display(group) or "",
                    "contact_type": as_str(record.get("contact_type"), "record.contact_type")[:100],
                }.items()
                if v
            },
            source_version=int(mod_count),
            created_at=parse_time(record.get("opened_at")),
            updated_at=parse_time(body.get("sys_updated_on")),
        )

    def _changes(self, body: dict[str, Any], ticket: CanonicalTicket) -> list[FieldChange]:
        """A person's change of category or impact/urgency, expressed as our labels (new values only)."""
        changed = {str(f) for f in body.get("changed_fields") or [] if isinstance(f, str)}
        changes: list[FieldChange] = []
        if changed & {"impact", "urgency"}:
            pair = (ticket.extra.get("impact", ""), ticket.extra.get("urgency", ""))
            changes.append(
                FieldChange(
                    field="priority",
                    new=self._priority_labels.get(pair, f"impact={pair[0]},urgency={pair[1]}"),
                )
            )
        if "category" in changed and ticket.category:
            changes.append(
                FieldChange(
                    field=self._category_label,
                    new=self._category_labels.get(ticket.category.lower(), ticket.category),
                )
            )
        return changes


def _mac(secret: SecretStr, data: bytes) -> bytes:
    return hmac.new(secret.get_secret_value().encode(), data, hashlib.sha256).digest()


def _display(ref: Any) -> str | None:
    """display_value of a reference field ({"value", "display_value"}) or a plain string."""
    if isinstance(ref, dict):
        value = ref.get("display_value") or ref.get("value")
        return str(value)[:300] if value else None
    return ref[:300] if isinstance(ref, str) and ref else None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-SN-Signature for a body (used by `replay` and the tests)."""
    return base64.b64encode(
        hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).digest()
    ).decode()
