"""Jira Cloud / Jira Service Management write-back: fields, an internal triage note, an approved public reply.

Internal notes never go out as a plain platform comment (that is public in a JSM project). Two routes,
chosen by `settings.jira.internal_comments`:

* ``servicedeskapi`` (default, documented by Atlassian): ``POST /rest/servicedeskapi/request/{id}/comment``
  with ``public: false``. The body is wiki text, so every markup trigger in model output is escaped.
* ``property``: ``POST /rest/api/3/issue/{id}/comment`` with an ADF body built from text nodes only and the
  ``sd.public.comment = {"internal": true}`` property (community-documented; keeps ADF's stronger inertness).

Exactly once: every comment ends with a marker line ``itsm-ref:<hash of idempotency key + part>``.
Comment properties would be invisible, but neither the platform comment list (``expand`` takes only
``renderedBody`` in the contract spec) nor the JSM list returns them, and an issue property set *after* the
POST is lost together with a lost response. The marker line is returned by both list endpoints, so after
a timeout we list the comments and look for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from service.connectors._http import HttpCaller, json_body
from service.domain.errors import PermanentUpstream
from service.domain.render import adf_plain_text, marker_token, note_with_unmapped, to_adf, to_jira_wiki_text
from service.domain.schemas import WriteBack, WriteOutcome
from service.settings import JiraSettings

TRIAGED_LABEL = "ai-triaged"
NOTE_HEADING = "AI triage (internal, not visible to the customer)"
COMMENT_PROPERTY = "itsm.writeback"
_PAGE = 100
_MAX_PAGES = 50  # bounds the marker search at 5 000 comments
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_.-]+")


def _label_slug(value: str) -> str:
    """Jira labels cannot contain spaces: lower-case, and join words with '-'."""
    return _LABEL_UNSAFE.sub("-", value.strip().lower()).strip("-") or "unknown"


def jira_error_message(response: httpx.Response) -> str:
    """The upstream reason from a platform ErrorCollection or a JSM ErrorResponse."""
    body = json_body(response)
    if not isinstance(body, dict):
        return response.text[:200] if response.text else ""
    parts: list[str] = [str(m) for m in body.get("errorMessages") or []]
    parts += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
    if body.get("errorMessage"):
        parts.append(str(body["errorMessage"]))
    return "; ".join(parts)


class JiraWriter:
    """TicketWriter for Jira Cloud / JSM (REST v3 and servicedeskapi), basic auth with email + API token."""

    source = "jira"

    def __init__(
        self,
        settings: JiraSettings,
        *,
        category_label: str = "queue",
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.base_url or not settings.email or settings.api_token is None:
            raise ValueError("Jira write-back needs ITSM_JIRA__BASE_URL, ITSM_JIRA__EMAIL and ITSM_JIRA__API_TOKEN")
        self.settings = settings
        self.category_label = category_label  # the predicted field written into settings.category_field
        self.http = HttpCaller(
            system="jira",
            base_url=settings.base_url,
            auth=(settings.email, settings.api_token.get_secret_value()),
            timeout_s=settings.timeout_s,
            error_message=jira_error_message,
            transport=transport,
            clock=clock,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self.http.close()

    # -- mapping --

    def map_fields(self, fields: dict[str, str]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        """Labels -> an IssueUpdateDetails body, the values written, and the labels that have no mapping."""
        edit_fields: dict[str, Any] = {}
        labels: list[str] = []
        written: dict[str, str] = {}
        unmapped: dict[str, str] = {}
        for name, label in fields.items():
            if name == "priority":
                jira_name = self.settings.priority_map.get(label)
                if jira_name is None:
                    unmapped[name] = label
                    continue
                edit_fields["priority"] = {"name": jira_name}
                written[name] = jira_name
            elif name == self.category_label:
                value = self.settings.category_map.get(label, label)
                target = self.settings.category_field
                if target == "components":
                    edit_fields["components"] = [{"name": value}]
                elif target == "labels":
                    value = f"{name}-{_label_slug(value)}"
                    labels.append(value)
                else:  # a single-select custom field
                    edit_fields[target] = {"value": value}
                written[name] = value
            elif name in ("category", "queue"):  # a second category-like label: searchable as a label
                value = f"{name}-{_label_slug(label)}"
                labels.append(value)
                written[name] = value
            else:
                unmapped[name] = label
        update: dict[str, Any] = {}
        if edit_fields or labels:
            labels.insert(0, TRIAGED_LABEL)
            update["labels"] = [{"add": label} for label in labels]
        body: dict[str, Any] = {}
        if edit_fields:
            body["fields"] = edit_fields
        if update:
            body["update"] = update
        return body, written, unmapped

    # -- comments --

    def _iter_comment_texts(self, issue: str, *, use_jsm: bool) -> Iterator[tuple[str, str]]:
        """(comment id, plain text) of the issue's comments, page by page (JSM list or platform list)."""
        for page in range(_MAX_PAGES):
            start = page * _PAGE
            if use_jsm:
                resp = self.http.request(
                    "GET",
                    f"/rest/servicedeskapi/request/{issue}/comment",
                    idempotent=True,
                    params={"public": "true", "internal": "true", "start": start, "limit": _PAGE},
                )
                body = json_body(resp) or {}
                for c in body.get("values") or []:
                    yield str(c.get("id")), str(c.get("body") or "")
                if body.get("isLastPage", True) or not body.get("values"):
                    return
            else:
                resp = self.http.request(
                    "GET",
                    f"/rest/api/3/issue/{issue}/comment",
                    idempotent=True,
                    params={"startAt": start, "maxResults": _PAGE, "orderBy": "created"},
                )
                body = json_body(resp) or {}
                comments = body.get("comments") or []
                for c in comments:
                    yield str(c.get("id")), adf_plain_text(c.get("body"))
                if not comments or start + len(comments) >= int(body.get("total", 0)):
                    return

    def find_markers(self, issue: str, tokens: dict[str, str], *, use_jsm: bool) -> dict[str, str]:
        """Part -> comment id for every marker token already present on the issue."""
        found: dict[str, str] = {}
        for comment_id, text in self._iter_comment_texts(issue, use_jsm=use_jsm):
            for part, token in tokens.items():
                if part not in found and token in text:
                    found[part] = comment_id
            if len(found) == len(tokens):
                break
        return found

    def _post_comment(
        self, issue: str, text: str, *, public: bool, token: str, key: str, part: str, links: list[str]
    ) -> str:
        """Post one comment carrying our marker; internal ones never go out as a plain platform comment."""
        heading = None if public else NOTE_HEADING
        if self.settings.internal_comments == "servicedeskapi":
            payload: dict[str, Any] = {
                "body": to_jira_wiki_text(text, heading=heading, footer=token, allowed_links=links),
                "public": public,
            }
            path = f"/rest/servicedeskapi/request/{issue}/comment"
        else:
            payload = {
                "body": to_adf(text, heading=heading, footer=token, allowed_links=links),
                "properties": [
                    {"key": "sd.public.comment", "value": {"internal": not public}},
                    {"key": COMMENT_PROPERTY, "value": {"key": key, "part": part}},
                ],
            }
            path = f"/rest/api/3/issue/{issue}/comment"
        resp = self.http.request("POST", path, idempotent=False, json=payload)
        body = json_body(resp) or {}
        return str(body.get("id", ""))

    # -- the port --

    def write(self, action: WriteBack) -> WriteOutcome:
        """Set fields (idempotent PUT), then post the internal note and/or public reply once each."""
        issue = action.external_id or action.external_key
        edit, written, unmapped = self.map_fields(action.fields)
        note = note_with_unmapped(action.note, unmapped)
        parts: dict[str, tuple[str, bool]] = {}
        if note:
            parts["note"] = (note, False)
        if action.public_reply:
            parts["reply"] = (action.public_reply, True)
        tokens = {part: marker_token(action.idempotency_key, part) for part in parts}
        use_jsm = self.settings.internal_comments == "servicedeskapi"

        found: dict[str, str] = {}
        if action.check_existing and tokens:
            found = self.find_markers(issue, tokens, use_jsm=use_jsm)
        if tokens and len(found) == len(tokens):
            ref = found.get("note") or found.get("reply")
            return WriteOutcome(external_ref=ref, already_done=True, written_fields=written, unmapped_fields=unmapped)

        if edit and not found:  # a found marker means an earlier attempt got past the edit already
            try:
                self.http.request("PUT", f"/rest/api/3/issue/{issue}", idempotent=True, json=edit)
            except PermanentUpstream as exc:
                if exc.status != 400:
                    raise
                # Jira refused the edit (a field off the screen, a component the project lacks): the agent must
                # still see the triage, so the fields become suggestions in the note, with Jira's reason.
                unmapped, written = {**unmapped, **written}, {}
                refused = f"Jira refused the field update ({exc}); the values above are suggestions only."
                parts["note"] = (f"{note_with_unmapped(action.note, unmapped) or ''}\n\n{refused}".strip(), False)
                tokens.setdefault("note", marker_token(action.idempotency_key, "note"))
        refs = dict(found)
        for part, (text, public) in parts.items():
            if part in found:
                continue
            refs[part] = self._post_comment(
                issue,
                text,
                public=public,
                token=tokens[part],
                key=action.idempotency_key,
                part=part,
                links=action.allowed_links,
            )
        return WriteOutcome(
            external_ref=refs.get("note") or refs.get("reply"),
            already_done=False,
            written_fields=written,
            unmapped_fields=unmapped,
        )
