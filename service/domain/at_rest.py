"""What a webhook leaves at rest: ticket text and raw payload with secrets redacted, before the commit.

The webhook route verifies the signature and the delivery id on the raw bytes first; only then does ingest call
these, so idempotency and signatures never see redacted bytes. The stored ticket text stays as the customer wrote
it (the worker's scrub still sees the same Unicode tricks and directives), except that every secret the scrubber
recognises is replaced by its typed placeholder. A secret that only shows after Unicode normalisation (split by a
zero-width character, written in full-width digits) makes the text stored in its normalised, redacted form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from service.domain.privacy import reporter_digest
from service.domain.sanitize import FLAG_SECRET, FLAG_UNICODE, normalize_unicode, redact_values
from service.domain.schemas import FieldChange, NormalizedEvent

_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MIN_STRING = 8  # shorter JSON strings cannot hold anything the recognisers would replace (keyword + value)
_MIN_ECHO = 6  # found secrets at least this long are also replaced wherever else they appear in the payload


@dataclass
class Redacted:
    """Text made safe to store, the ticket flags it earned, and the secret values it replaced."""

    text: str
    flags: set[str] = field(default_factory=set)
    found: list[str] = field(default_factory=list)


def redact_text(text: str) -> Redacted:
    """Secrets out of one text; normalised first only when normalisation uncovers one."""
    out, counts, found = redact_values(text)
    if out.isascii() and not _ASCII_CONTROL.search(out):
        return Redacted(out, {FLAG_SECRET} if counts else set(), found)  # NFKC and stripping change nothing here
    normal, stripped, _hidden = normalize_unicode(out)
    if normal != out:
        again, more, found_more = redact_values(normal)
        if more:
            return Redacted(again, {FLAG_SECRET, FLAG_UNICODE} if stripped else {FLAG_SECRET}, found + found_more)
    return Redacted(out, {FLAG_SECRET} if counts else set(), found)


@dataclass(frozen=True)
class SafeEvent:
    """A normalised event ready to store: redacted ticket, its flags, the reporter's digest, the secrets found."""

    event: NormalizedEvent
    flags: list[str]
    reporter_digest: str | None
    found: list[str]


def redact_event(event: NormalizedEvent, payload: Any = None) -> SafeEvent:
    """Redact the ticket's subject, body and free-text extras and the changelog values of one event."""
    flags: set[str] = set()
    found: list[str] = []

    def clean(text: str) -> str:
        r = redact_text(text)
        flags.update(r.flags)
        found.extend(r.found)
        return r.text

    ticket = event.ticket
    if ticket is not None:
        ticket = ticket.model_copy(
            update={
                "subject": clean(ticket.subject),
                "body": clean(ticket.body),
                "extra": {k: clean(v) for k, v in ticket.extra.items()},
            }
        )
    changes = [
        FieldChange(field=c.field, old=clean(c.old) if c.old else c.old, new=clean(c.new) if c.new else c.new)
        for c in event.changes
    ]
    safe = event.model_copy(update={"ticket": ticket, "changes": changes})
    digest = reporter_digest(reporter_email(event.source, payload)) if ticket is not None else None
    return SafeEvent(safe, sorted(flags), digest, found)


def reporter_email(source: str, payload: Any) -> str | None:
    """The reporter's e-mail address where the payload carries one (Jira reporter, ServiceNow caller)."""
    if not isinstance(payload, dict):
        return None
    person: Any = None
    if source == "jira":
        person = ((payload.get("issue") or {}).get("fields") or {}).get("reporter")
    elif source == "servicenow":
        record = payload.get("record") or {}
        person = record.get("caller_id") if isinstance(record, dict) else None
        if isinstance(record, dict) and isinstance(record.get("caller_email"), str):
            return str(record["caller_email"])
    if isinstance(person, dict):
        email = person.get("emailAddress") or person.get("email")
        return email if isinstance(email, str) and "@" in email else None
    return None


def redact_payload(payload: Any, found: list[str]) -> str:
    """The raw JSON with every string redacted and every secret found in the ticket text removed wherever it is."""
    text = json.dumps(_redact_strings(payload, found), ensure_ascii=False, separators=(",", ":"))
    for value in sorted({v for v in found if len(v) >= _MIN_ECHO}, key=len, reverse=True):
        # The canonical text may join what the payload splits (ADF text nodes); the whole value still goes.
        text = text.replace(json.dumps(value, ensure_ascii=False)[1:-1], "[REDACTED:echo]")
    return text


def _redact_strings(node: Any, found: list[str]) -> Any:
    """Every string value of a JSON tree through the redactor (keys are structure, not data)."""
    if isinstance(node, str):
        if len(node) < _MIN_STRING:
            return node
        r = redact_text(node)
        found.extend(r.found)
        return r.text
    if isinstance(node, dict):
        return {k: _redact_strings(v, found) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact_strings(v, found) for v in node]
    return node
