"""ServiceNow Knowledge: `kb_knowledge` read through the Table API, incrementally by `sys_updated_on`.

Changes are read in `sys_updated_on` order (then `sys_id`) from the last timestamp seen, keyset style: an article
edited while the sync pages through moves behind the cursor and is read again, never skipped (offset paging would
skip the record that slides into its place). Every record changed since the cursor comes back, published or not:
one that is no longer published (retired, outdated, draft, inactive, past `valid_to`) leaves the knowledge base.
Hard deletions leave no record to read, so the sync also lists the sys_ids of every published article.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx

from service.connectors._http import HttpCaller
from service.connectors.servicenow import ServiceNowOAuth, servicenow_error_message
from service.domain.errors import PermanentUpstream
from service.knowledge.source import ArticleRecord, Listing, RetryingReader
from service.knowledge.text import language_code
from service.settings import Settings

TABLE_PATH = "/api/now/table/kb_knowledge"
PAGE_SIZE = 100
LISTING_PAGE_SIZE = 1000
FIELDS = (
    "sys_id,number,short_description,text,workflow_state,active,valid_to,language,kb_knowledge_base,"
    "sys_updated_on,sys_mod_count"
)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # Table API date-times without display values: UTC, this format


def _value(field: Any) -> str:
    """A field's value whether the API returned a plain string or a reference {value, link}."""
    if isinstance(field, dict):
        return str(field.get("value") or "")
    return "" if field is None else str(field)


def _published(record: dict[str, Any], today: date) -> bool:
    """Published, active and not past its valid-to date (an expired article is not shown to users either)."""
    if _value(record.get("workflow_state")) != "published":
        return False
    if _value(record.get("active")).lower() == "false":
        return False
    valid_to = _value(record.get("valid_to"))
    if valid_to:
        try:
            if date.fromisoformat(valid_to[:10]) < today:
                return False
        except ValueError:
            pass  # an unparsable date does not hide an article
    return True


class ServiceNowKnowledge:
    """KnowledgeSource over a ServiceNow instance's kb_knowledge table."""

    name = "servicenow"

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        sn, kb = settings.servicenow, settings.kb
        if not sn.instance_url or not sn.username or sn.password is None:
            raise ValueError(
                "ServiceNow Knowledge needs ITSM_SERVICENOW__INSTANCE_URL, __USERNAME and __PASSWORD "
                "(the account needs read access to kb_knowledge)"
            )
        self.instance_url = sn.instance_url.rstrip("/")
        password = sn.password.get_secret_value()
        auth: httpx.Auth | tuple[str, str]
        if sn.oauth_client_id:
            secret = sn.oauth_client_secret.get_secret_value() if sn.oauth_client_secret else ""
            auth = ServiceNowOAuth(
                token_url=f"{self.instance_url}/oauth_token.do",
                client_id=sn.oauth_client_id,
                client_secret=secret,
                username=sn.username,
                password=password,
            )
        else:
            auth = (sn.username, password)
        caller = HttpCaller(
            system="servicenow-kb",
            base_url=self.instance_url,
            auth=auth,
            timeout_s=kb.timeout_s,
            error_message=servicenow_error_message,
            transport=transport,
        )
        self.reader = RetryingReader(
            caller, max_retries=kb.max_retries, base_s=kb.backoff_base_s, cap_s=kb.backoff_cap_s, sleep=sleep
        )
        self.extra_query = kb.servicenow_query.strip().strip("^")
        self.default_language = kb.language
        self._today = today
        self._cursor: str | None = None

    def close(self) -> None:
        """Release connections."""
        self.reader.close()

    def _query(self, condition: str, order: str) -> str:
        """An encoded query: condition, the operator's extra filter, then the ordering."""
        parts = [p for p in (condition, self.extra_query) if p]
        return "^".join([*parts, order])

    def _page(self, query: str, *, fields: str, limit: int, offset: int) -> list[dict[str, Any]]:
        body, _ = self.reader.get(
            TABLE_PATH,
            {
                "sysparm_query": query,
                "sysparm_fields": fields,
                "sysparm_limit": limit,
                "sysparm_offset": offset,
                "sysparm_exclude_reference_link": "true",
            },
        )
        rows = body.get("result") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise PermanentUpstream("servicenow-kb GET kb_knowledge: no result list in the response")
        return [r for r in rows if isinstance(r, dict)]

    def changed(self, cursor: str | None, known: dict[str, str]) -> Iterator[ArticleRecord]:
        """Records updated at or after `cursor` (all of them on the first sync), oldest first."""
        since, offset = cursor, 0
        self._cursor = cursor
        today = self._today()
        while True:
            condition = f"sys_updated_on>={since}" if since else ""
            rows = self._page(
                self._query(condition, "ORDERBYsys_updated_on^ORDERBYsys_id"),
                fields=FIELDS,
                limit=PAGE_SIZE,
                offset=offset,
            )
            for row in rows:
                record = self._record(row, today)
                if record is not None and known.get(record.external_id) != record.version:
                    yield record
            if rows:
                self._cursor = max(self._cursor or "", _value(rows[-1].get("sys_updated_on")))
            if len(rows) < PAGE_SIZE:
                return
            last = _value(rows[-1].get("sys_updated_on"))
            same = sum(1 for r in rows if _value(r.get("sys_updated_on")) == last)
            # Keyset on the timestamp; the offset only pages through records sharing the last second.
            offset = offset + same if last == since else same
            since = last

    def next_cursor(self) -> str | None:
        """The newest sys_updated_on read (records of that second are read again next time: harmless)."""
        return self._cursor

    def listing(self) -> Listing:
        """sys_ids of every published article, read page by page to the end."""
        ids: set[str] = set()
        offset = 0
        today = self._today()
        while True:
            rows = self._page(
                self._query("workflow_state=published^active=true", "ORDERBYsys_id"),
                fields="sys_id,workflow_state,active,valid_to",
                limit=LISTING_PAGE_SIZE,
                offset=offset,
            )
            ids.update(_value(r.get("sys_id")) for r in rows if _published(r, today) and r.get("sys_id"))
            if len(rows) < LISTING_PAGE_SIZE:
                return Listing(frozenset(ids))
            offset += len(rows)

    def _record(self, row: dict[str, Any], today: date) -> ArticleRecord | None:
        """An ArticleRecord from a kb_knowledge row (None without a sys_id)."""
        sys_id = _value(row.get("sys_id"))
        if not sys_id:
            return None
        number = _value(row.get("number"))
        updated = _value(row.get("sys_updated_on"))
        try:
            updated_at = datetime.strptime(updated, _TIME_FORMAT).replace(tzinfo=UTC) if updated else None
        except ValueError:
            updated_at = None
        return ArticleRecord(
            external_id=sys_id,
            number=number,
            collection=_value(row.get("kb_knowledge_base")),
            title=_value(row.get("short_description")) or number,
            url=f"{self.instance_url}/kb_view.do?sysparm_article={number}" if number else None,
            language=language_code(_value(row.get("language")), self.default_language),
            html=_value(row.get("text")),
            version=f"{_value(row.get('sys_mod_count'))}:{updated}",
            updated_at=updated_at,
            published=_published(row, today),
        )
