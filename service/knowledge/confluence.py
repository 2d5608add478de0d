"""Confluence Cloud (the knowledge base behind Jira Service Management): REST API v2, configured spaces.

One listing pass per space (`GET /wiki/api/v2/spaces/{id}/pages?status=current`, cursor-paginated through
`_links.next`) gives every current page's id and version number; only pages that are new or whose version moved
are fetched with their bodies (`GET /wiki/api/v2/pages?id=..&body-format=storage`, up to 250 ids a request). A
page missing from a space's complete listing (archived, trashed, deleted, moved away) leaves the knowledge base;
a space whose listing failed part-way removes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from service.connectors._http import HttpCaller, json_body
from service.domain.errors import PermanentUpstream, UpstreamError
from service.knowledge.source import ArticleRecord, Listing, RetryingReader
from service.knowledge.text import language_code
from service.settings import Settings

API = "/wiki/api/v2"
PAGE_LIMIT = 250  # the v2 maximum for pages
BODY_BATCH = 50  # ids per body request: bodies are large, keep responses moderate


def confluence_error_message(response: httpx.Response) -> str:
    """The reason from Confluence's {"errors": [{"status", "code", "title", "detail"}]} envelope."""
    body = json_body(response)
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        parts = []
        for err in body["errors"]:
            if isinstance(err, dict):
                parts.append(" / ".join(str(err[k]) for k in ("code", "title", "detail") if err.get(k)))
        return "; ".join(p for p in parts if p)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text[:200] if response.text else ""


def _parse_time(raw: Any) -> datetime | None:
    """An ISO-8601 timestamp from the API (None when absent or unparsable)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


class ConfluenceKnowledge:
    """KnowledgeSource over the configured spaces of a Confluence Cloud site."""

    name = "confluence"

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        kb = settings.kb
        email = kb.confluence_email or settings.jira.email
        token = kb.confluence_api_token or settings.jira.api_token
        if not kb.confluence_url or not email or token is None:
            raise ValueError(
                "Confluence needs ITSM_KB__CONFLUENCE_URL and an account: ITSM_KB__CONFLUENCE_EMAIL and "
                "ITSM_KB__CONFLUENCE_API_TOKEN (or the Jira bot's ITSM_JIRA__EMAIL / __API_TOKEN)"
            )
        if not kb.confluence_spaces:
            raise ValueError('Confluence needs ITSM_KB__CONFLUENCE_SPACES, e.g. \'["IT", "HR"]\'')
        self.site = kb.confluence_url.rstrip("/").removesuffix("/wiki")
        caller = HttpCaller(
            system="confluence",
            base_url=self.site,
            auth=(email, token.get_secret_value()),
            timeout_s=kb.timeout_s,
            error_message=confluence_error_message,
            transport=transport,
        )
        self.reader = RetryingReader(
            caller, max_retries=kb.max_retries, base_s=kb.backoff_base_s, cap_s=kb.backoff_cap_s, sleep=sleep
        )
        self.spaces = list(dict.fromkeys(kb.confluence_spaces))
        self.languages = {k: language_code(v, kb.language) for k, v in kb.confluence_languages.items()}
        self.default_language = kb.language
        self._listed: dict[str, dict[str, str]] = {}  # space key -> page id -> version (complete listings only)
        self._failed: dict[str, str] = {}  # space key -> why its listing is incomplete

    def close(self) -> None:
        """Release connections."""
        self.reader.close()

    def _follow(self, first: str, params: dict[str, str | int] | None) -> Iterator[dict[str, Any]]:
        """Every result of a cursor-paginated list, following `_links.next` (relative to the site)."""
        path: str | None = first
        query = params
        while path:
            body, _ = self.reader.get(path, query)
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise PermanentUpstream(f"confluence GET {urlsplit(path).path}: no results list in the response")
            yield from (r for r in body["results"] if isinstance(r, dict))
            nxt = (body.get("_links") or {}).get("next")
            path, query = (nxt if isinstance(nxt, str) and nxt else None), None  # `next` carries every parameter

    def _space_ids(self) -> dict[str, str]:
        """Space key -> id for the configured keys the account can see."""
        found: dict[str, str] = {}
        for space in self._follow(f"{API}/spaces", {"keys": ",".join(self.spaces), "limit": PAGE_LIMIT}):
            if space.get("key") in self.spaces and space.get("id"):
                found[str(space["key"])] = str(space["id"])
        return found

    def _list_space(self, space_id: str) -> dict[str, str]:
        """Current page id -> version number of one space, read to the last page."""
        pages: dict[str, str] = {}
        for page in self._follow(f"{API}/spaces/{space_id}/pages", {"status": "current", "limit": PAGE_LIMIT}):
            if page.get("id") and page.get("status", "current") == "current":
                pages[str(page["id"])] = str((page.get("version") or {}).get("number", ""))
        return pages

    def changed(self, cursor: str | None, known: dict[str, str]) -> Iterator[ArticleRecord]:
        """Pages of the configured spaces that are new or changed since they were stored."""
        self._listed, self._failed = {}, {}
        space_ids = self._space_ids()
        for key in self.spaces:
            if key not in space_ids:
                self._failed[key] = "space not found or not visible to the account"
                continue
            try:
                pages = self._list_space(space_ids[key])
            except UpstreamError as exc:  # the other spaces still sync; this one keeps what it has
                self._failed[key] = str(exc)
                continue
            self._listed[key] = pages
            stale = [pid for pid, version in pages.items() if known.get(pid) != version]
            for start in range(0, len(stale), BODY_BATCH):
                yield from self._bodies(key, stale[start : start + BODY_BATCH])

    def _bodies(self, space_key: str, page_ids: list[str]) -> Iterator[ArticleRecord]:
        """Full pages (storage-format bodies) for a batch of ids."""
        query = urlencode([("id", pid) for pid in page_ids] + [("body-format", "storage"), ("limit", PAGE_LIMIT)])
        for page in self._follow(f"{API}/pages?{query}", None):
            yield self._record(space_key, page)

    def _record(self, space_key: str, page: dict[str, Any]) -> ArticleRecord:
        """An ArticleRecord from a v2 page with its body."""
        links = page.get("_links") or {}
        webui = links.get("webui")
        url = f"{self.site}/wiki{webui}" if isinstance(webui, str) and webui.startswith("/") else None
        body = ((page.get("body") or {}).get("storage") or {}).get("value") or ""
        version = page.get("version") or {}
        return ArticleRecord(
            external_id=str(page.get("id")),
            number=str(page.get("id")),
            collection=space_key,
            title=str(page.get("title") or ""),
            url=url,
            language=self.languages.get(space_key, language_code(self.default_language)),
            html=str(body),
            version=str(version.get("number", "")),
            updated_at=_parse_time(version.get("createdAt")),
            published=page.get("status", "current") == "current",
        )

    def next_cursor(self) -> str | None:
        """Confluence needs no cursor: versions tell what changed."""
        return None

    def listing(self) -> Listing:
        """Page ids of the spaces listed completely during `changed`.

        When every configured space was listed, pages of spaces no longer configured go too; otherwise only the
        listed spaces are covered and the failures are reported.
        """
        ids = frozenset(pid for pages in self._listed.values() for pid in pages)
        if not self._failed:
            return Listing(ids)
        errors = tuple(f"space {key}: {why}" for key, why in sorted(self._failed.items()))
        return Listing(ids, collections=frozenset(self._listed), errors=errors)
