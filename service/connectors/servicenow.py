"""ServiceNow write-back over the Table API: one PATCH per write (fields + work note and/or customer comment).

Priority is never written: ServiceNow derives it from impact x urgency (Priority Lookup Rules), so a predicted
priority label becomes an (impact, urgency) pair from `settings.servicenow.priority_map`.

Exactly once: journal entries end with a marker line ``itsm-ref:<hash>``. A PATCH that appends to a journal
is not idempotent, so after a timeout or lost response the next attempt (``check_existing``) reads the
incident with ``sysparm_display_value=true`` (journal fields then hold every entry's text), then, for parts
not seen there, ``sys_journal_field`` (where entries are stored), and skips parts already present.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx

from service.connectors._http import HttpCaller, json_body
from service.domain.errors import PermanentUpstream
from service.domain.render import marker_token, note_with_unmapped, to_servicenow_journal
from service.domain.schemas import WriteBack, WriteOutcome
from service.settings import ServiceNowSettings

NOTE_HEADING = "[AI triage] (internal)"
# Baseline incident categories: a label equal to one of these (any case) needs no map entry.
BASELINE_CATEGORIES = frozenset({"inquiry", "software", "hardware", "network", "database"})
_JOURNALS = {"note": "work_notes", "reply": "comments"}


def servicenow_error_message(response: httpx.Response) -> str:
    """The upstream reason from ServiceNow's {"error": {"message", "detail"}} envelope."""
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return " / ".join(str(x) for x in (err.get("message"), err.get("detail")) if x)
    return response.text[:200] if response.text else ""


class ServiceNowOAuth(httpx.Auth):
    """OAuth 2.0 password grant against /oauth_token.do; caches the token and refreshes it once on a 401."""

    requires_response_body = True

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, username: str, password: str) -> None:
        self._token_url = token_url
        self._form = {
            "grant_type": "password",
            "client_id": client_id,
            "client_secret": client_secret,
            "username": username,
            "password": password,
        }
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def _token_request(self) -> httpx.Request:
        """The form-encoded token request (JSON is rejected by ServiceNow)."""
        return httpx.Request("POST", self._token_url, data=self._form, headers={"Accept": "application/json"})

    def _store(self, response: httpx.Response) -> bool:
        """Keep the access token from a token response; False when there is none."""
        body = json_body(response)
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            return False
        with self._lock:
            self._token = str(body["access_token"])
            # Refresh a minute early so a token never expires between check and use.
            self._expires_at = time.monotonic() + float(body.get("expires_in", 1799)) - 60
        return True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach a bearer token, fetching one first when needed; a failed token call is returned as is."""
        if self._token is None or time.monotonic() >= self._expires_at:
            token_response = yield self._token_request()
            if not self._store(token_response):
                return  # the caller classifies the token endpoint's own error response
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            token_response = yield self._token_request()
            if self._store(token_response):
                request.headers["Authorization"] = f"Bearer {self._token}"
                yield request


class ServiceNowWriter:
    """TicketWriter for ServiceNow incidents (basic auth, or OAuth when a client id is configured)."""

    source = "servicenow"

    def __init__(
        self,
        settings: ServiceNowSettings,
        *,
        category_label: str = "queue",
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.instance_url or not settings.username or settings.password is None:
            raise ValueError("ServiceNow write-back needs ITSM_SERVICENOW__INSTANCE_URL, __USERNAME and __PASSWORD")
        self.settings = settings
        self.category_label = category_label
        auth: httpx.Auth | tuple[str, str]
        password = settings.password.get_secret_value()
        if settings.oauth_client_id:
            secret = settings.oauth_client_secret.get_secret_value() if settings.oauth_client_secret else ""
            auth = ServiceNowOAuth(
                token_url=settings.instance_url.rstrip("/") + "/oauth_token.do",
                client_id=settings.oauth_client_id,
                client_secret=secret,
                username=settings.username,
                password=password,
            )
        else:
            auth = (settings.username, password)
        self.http = HttpCaller(
            system="servicenow",
            base_url=settings.instance_url,
            auth=auth,
            timeout_s=settings.timeout_s,
            error_message=servicenow_error_message,
            transport=transport,
            clock=clock,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self.http.close()

    def map_fields(self, fields: dict[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """Labels -> incident columns, the values written, and the labels that have no mapping."""
        columns: dict[str, str] = {}
        written: dict[str, str] = {}
        unmapped: dict[str, str] = {}
        for name, label in fields.items():
            if name == "priority" and label in self.settings.priority_map:
                impact, urgency = self.settings.priority_map[label]
                columns["impact"], columns["urgency"] = impact, urgency
                written[name] = f"impact={impact},urgency={urgency}"
            elif name in ("category", "queue", self.category_label):
                done = []
                # A queue routes to an assignment group; any category-like label may set the category.
                if name != "category" and label in self.settings.assignment_group_map:
                    columns["assignment_group"] = self.settings.assignment_group_map[label]
                    done.append(f"assignment_group={columns['assignment_group']}")
                value = self._category(label)
                if value is not None and "category" not in columns:
                    category, _, subcategory = value.partition("/")
                    columns["category"] = category
                    if subcategory:
                        columns["subcategory"] = subcategory
                    done.append(f"category={value}")
                if done:
                    written[name] = ",".join(done)
                else:
                    unmapped[name] = label
            else:
                unmapped[name] = label
        return columns, written, unmapped

    def _category(self, label: str) -> str | None:
        """A category label's 'category[/subcategory]' value, from the map or the baseline choices."""
        if label in self.settings.category_map:
            return self.settings.category_map[label]
        return label.lower() if label.lower() in BASELINE_CATEGORIES else None

    def find_markers(self, sys_id: str, tokens: dict[str, str]) -> set[str]:
        """Parts whose marker already appears in the incident's work notes or comments."""
        found = self._markers_in_display_values(sys_id, tokens)
        missing = {part: token for part, token in tokens.items() if part not in found}
        if missing:
            found |= self._markers_in_journal_table(sys_id, missing)
        return found

    def _markers_in_display_values(self, sys_id: str, tokens: dict[str, str]) -> set[str]:
        """Look in the incident's journal display values (sysparm_display_value=true lists every entry)."""
        resp = self.http.request(
            "GET",
            f"/api/now/table/incident/{sys_id}",
            idempotent=True,
            params={"sysparm_display_value": "true", "sysparm_fields": "sys_id,work_notes,comments"},
        )
        record = (json_body(resp) or {}).get("result") or {}
        found = set()
        for part, token in tokens.items():
            journal = record.get(_JOURNALS[part]) or ""
            if isinstance(journal, dict):  # sysparm_display_value=all shape
                journal = journal.get("display_value") or ""
            if token in str(journal):
                found.add(part)
        return found

    def _markers_in_journal_table(self, sys_id: str, tokens: dict[str, str]) -> set[str]:
        """Second look in sys_journal_field, where entries are stored (display values are [unverified])."""
        likes = "^OR".join(f"valueLIKE{token}" for token in tokens.values())
        try:
            resp = self.http.request(
                "GET",
                "/api/now/table/sys_journal_field",
                idempotent=True,
                params={
                    "sysparm_query": f"element_id={sys_id}^elementINwork_notes,comments^{likes}",
                    "sysparm_fields": "element,value",
                    "sysparm_limit": 20,
                },
            )
        except PermanentUpstream as exc:
            if exc.status in (403, 404):  # no ACL on the journal table: the display-value look must do
                return set()
            raise
        rows = (json_body(resp) or {}).get("result") or []
        texts = [str(row.get("value", "")) for row in rows if isinstance(row, dict)]
        return {part for part, token in tokens.items() if any(token in text for text in texts)}

    def write(self, action: WriteBack) -> WriteOutcome:
        """PATCH fields, work note and/or customer comment in one request; skip parts already written."""
        sys_id = action.external_id
        columns, written, unmapped = self.map_fields(action.fields)
        note = note_with_unmapped(action.note, unmapped)
        texts: dict[str, tuple[str, str | None]] = {}
        if note:
            texts["note"] = (note, NOTE_HEADING)
        if action.public_reply:
            texts["reply"] = (action.public_reply, None)
        tokens = {part: marker_token(action.idempotency_key, part) for part in texts}

        found: set[str] = set()
        if action.check_existing and tokens:
            found = self.find_markers(sys_id, tokens)
        if tokens and found == set(tokens):
            return WriteOutcome(
                external_ref=sys_id, already_done=True, written_fields=written, unmapped_fields=unmapped
            )

        body: dict[str, Any] = {} if found else dict(columns)  # a found marker means the same PATCH set them
        for part, (text, heading) in texts.items():
            if part not in found:
                body[_JOURNALS[part]] = to_servicenow_journal(
                    text, heading=heading, footer=tokens[part], allowed_links=action.allowed_links
                )
        if body:
            appends = any(j in body for j in _JOURNALS.values())
            self.http.request(
                "PATCH",
                f"/api/now/table/incident/{sys_id}",
                idempotent=not appends,
                params={"sysparm_exclude_reference_link": "true", "sysparm_fields": "sys_id,number,priority"},
                json=body,
            )
        return WriteOutcome(external_ref=sys_id, written_fields=written, unmapped_fields=unmapped)
