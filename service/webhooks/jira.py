"""Jira Cloud / JSM admin webhooks: verify X-Hub-Signature, normalise to a CanonicalTicket."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from service.domain.errors import InvalidPayload, InvalidSignature
from service.domain.schemas import CanonicalTicket, FieldChange, NormalizedEvent
from service.settings import Settings
from service.webhooks.common import as_dict, as_str, bounded_text, delivery_header, parse_time
from service.webhooks.markup import to_text

TRIAGE_EVENTS = {"jira:issue_created"}
UPDATE_EVENTS = {"jira:issue_updated"}
COMMENT_EVENTS = {"comment_created", "comment_updated", "comment_deleted"}
_CORRECTABLE = {"priority": "priority", "components": "category", "component": "category", "labels": "labels"}


class JiraWebhookParser:
    """Verifies and normalises Jira admin-webhook deliveries (REST v2 shaped payloads)."""

    source = "jira"

    def __init__(self, settings: Settings) -> None:
        self._secrets = [s for s in (settings.jira.webhook_secret, settings.jira.webhook_secret_next) if s]
        self._own_account = settings.jira.account_id
        self._category_field = settings.jira.category_field
        self._category_label = settings.category_label_field
        self._priority_labels = {name.lower(): label for label, name in settings.jira.priority_map.items()}
        self._category_labels = {value.lower(): label for label, value in settings.jira.category_map.items()}

    def set_own_account(self, account_id: str | None) -> None:
        """Record the service's own account id (resolved with /myself at start-up when not configured)."""
        self._own_account = account_id

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> None:
        """Constant-time check of `X-Hub-Signature: sha256=<hex>` against every configured secret."""
        header = (headers.get("x-hub-signature") or "").strip()
        if not header:
            raise InvalidSignature("missing X-Hub-Signature header")
        if not header.lower().startswith("sha256="):
            raise InvalidSignature("X-Hub-Signature must be 'sha256=<hex>'")
        given = header[7:].lower()
        if not self._secrets:
            raise InvalidSignature("no Jira webhook secret is configured")
        if not any(hmac.compare_digest(_hex_hmac(secret, raw_body), given) for secret in self._secrets):
            raise InvalidSignature("X-Hub-Signature does not match the body")

    def delivery_id(self, raw_body: bytes, headers: Mapping[str, str]) -> str:
        """X-Atlassian-Webhook-Identifier (stable across Jira's retries), else a hash of the signed body."""
        return delivery_header(headers, "x-atlassian-webhook-identifier") or (
            "sha256:" + hashlib.sha256(raw_body).hexdigest()
        )

    def parse(self, payload: object, *, delivery_id: str) -> NormalizedEvent:
        """Normalise one verified webhook body."""
        body = as_dict(payload, "body")
        event = as_str(body.get("webhookEvent"), "webhookEvent", required=True, allow_int=False)
        actor = _account(body.get("user"))
        base: dict[str, Any] = {
            "source": self.source,
            "delivery_id": delivery_id,
            "event_type": event,
            "actor": actor,
        }
        if event in COMMENT_EVENTS:
            comment = as_dict(body.get("comment") or {}, "comment")
            author = _account(comment.get("author"))
            reason = "own_echo" if author and author == self._own_account else "comment_event"
            base["actor"] = author or actor
            return NormalizedEvent(**base, action="ignore", ignore_reason=reason)
        if event not in TRIAGE_EVENTS | UPDATE_EVENTS:
            return NormalizedEvent(**base, action="ignore", ignore_reason=f"event type {event!r} is not handled")
        ticket = self._ticket(as_dict(body.get("issue"), "issue"), body)
        if actor and actor == self._own_account:
            return NormalizedEvent(**base, action="ignore", ignore_reason="own_echo", ticket=ticket)
        if event in TRIAGE_EVENTS:
            return NormalizedEvent(**base, action="triage", ticket=ticket)
        return NormalizedEvent(**base, action="update", ticket=ticket, changes=self._changes(body.get("changelog")))

    def _ticket(self, issue: dict[str, Any], body: dict[str, Any]) -> CanonicalTicket:
        """Canonical form of the `issue` object."""
        issue_id = as_str(issue.get("id"), "issue.id", required=True)
        fields = as_dict(issue.get("fields") or {}, "issue.fields")
        text, truncated = bounded_text(to_text(fields.get("description")))
        updated = parse_time(fields.get("updated"))
        # Jira's payload timestamp (ms) orders events when `updated` is missing (RELIABILITY T5).
        version = int(updated.timestamp() * 1000) if updated else _int(body.get("timestamp"))
        labels = [label for label in fields.get("labels") or [] if isinstance(label, str)]
        components = [c.get("name") for c in fields.get("components") or [] if isinstance(c, dict) and c.get("name")]
        category = (
            _category_value(fields.get(self._category_field)) if self._category_field.startswith("custom") else None
        )
        return CanonicalTicket(
            source=self.source,
            external_id=issue_id[:200],
            external_key=(as_str(issue.get("key"), "issue.key") or issue_id)[:200],
            url=(_browse_url(issue) or "")[:2000] or None,
            subject=bounded_text(as_str(fields.get("summary"), "issue.fields.summary"), limit=1000)[0],
            body=text,
            body_truncated=truncated,
            reporter=_account(fields.get("reporter")),
            priority=_name(fields.get("priority")),
            category=category or (components[0] if components else None),
            labels=labels,
            status=_name(fields.get("status")),
            extra={
                k: v
                for k, v in {
                    "project": _key(fields.get("project")),
                    "issuetype": _name(fields.get("issuetype")),
                    "request_type": _request_type(fields),
                }.items()
                if v
            },
            source_version=version,
            created_at=parse_time(fields.get("created")),
            updated_at=updated,
        )

    def _changes(self, changelog: Any) -> list[FieldChange]:
        """Changes to fields we predict, translated back into label values (a correction by a person)."""
        items = changelog.get("items") if isinstance(changelog, dict) else None
        changes: list[FieldChange] = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            field_id = str(item.get("fieldId") or item.get("field") or "").lower()
            if field_id == self._category_field.lower():
                kind = "category"
            else:
                kind = _CORRECTABLE.get(field_id, "")
            if kind == "priority":
                changes.append(
                    FieldChange(
                        field="priority",
                        old=self._priority_label(item.get("fromString")),
                        new=self._priority_label(item.get("toString")),
                    )
                )
            elif kind == "category":
                changes.append(
                    FieldChange(
                        field=self._category_label,
                        old=self._category(item.get("fromString")),
                        new=self._category(item.get("toString")),
                    )
                )
        return changes

    def _priority_label(self, name: Any) -> str | None:
        """Jira priority name -> our label (P1..P5), or the name itself when unmapped."""
        return self._priority_labels.get(name.lower(), name) if isinstance(name, str) and name else None

    def _category(self, value: Any) -> str | None:
        """Jira category value -> our queue label, or the value itself when unmapped."""
        return self._category_labels.get(value.lower(), value) if isinstance(value, str) and value else None


def _hex_hmac(secret: SecretStr, body: bytes) -> str:
    return hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()


def _account(user: Any) -> str | None:
    return str(user.get("accountId"))[:300] if isinstance(user, dict) and user.get("accountId") else None


def _name(obj: Any) -> str | None:
    return str(obj["name"])[:100] if isinstance(obj, dict) and obj.get("name") else None


def _key(obj: Any) -> str | None:
    return str(obj["key"])[:100] if isinstance(obj, dict) and obj.get("key") else None


def _int(value: Any) -> int:
    try:
        return max(0, min(int(value), 2**62))  # BIGINT column; hostile values are clamped
    except (TypeError, ValueError, OverflowError):
        return 0


def _category_value(value: Any) -> str | None:
    """A custom select field is {"value": ...}; a text field is a string."""
    if isinstance(value, dict) and value.get("value"):
        return str(value["value"])[:200]
    return value[:200] if isinstance(value, str) and value else None


def _request_type(fields: dict[str, Any]) -> str | None:
    """The JSM request type name, if the payload carries the (site-specific) request-type field."""
    for value in fields.values():
        if isinstance(value, dict) and isinstance(value.get("requestType"), dict):
            name = value["requestType"].get("name")
            return str(name)[:200] if name else None
    return None


def _browse_url(issue: dict[str, Any]) -> str | None:
    """https://site/browse/KEY from the issue's REST `self` link."""
    self_link, key = issue.get("self"), issue.get("key")
    if isinstance(self_link, str) and isinstance(key, str) and "/rest/api/" in self_link:
        return self_link.split("/rest/api/")[0] + "/browse/" + key
    return None


def jira_time(value: datetime) -> str:
    """Jira's timestamp format (used by `replay` to stamp sample payloads)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


__all__ = ["InvalidPayload", "JiraWebhookParser", "jira_time"]
