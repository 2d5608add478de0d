"""Jira's webhook echo of our own comments: a signed `comment_created` delivery to the receiver (RELIABILITY T19)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.fakes._jira_state import FakeComment, FakeIssue

ECHO_FIXTURE = "jira_comment_created_internal_by_bot.json"


def comment_echo(
    url: str, *, secret: str | None, statuses: list[int], template: Path
) -> Callable[[FakeIssue, FakeComment], None]:
    """A FakeJira.on_comment hook posting the fixture-shaped webhook; receiver statuses are appended to `statuses`.

    Sent from a thread so a receiver that calls back into the fake (e.g. GET /myself) cannot deadlock it.
    """

    def post(raw: bytes, headers: dict[str, str]) -> None:
        statuses.append(httpx.post(url, content=raw, headers=headers, timeout=10).status_code)

    def echo(issue: FakeIssue, comment: FakeComment) -> None:
        payload = json.loads(template.read_text())
        payload["timestamp"] = int(time.time() * 1000)
        payload["comment"].update(id=comment.id, body=comment.plain, jsdPublic=comment.public)
        payload["issue"].update(id=issue.id, key=issue.key)
        raw = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": f"echo-{issue.id}-{comment.id}",
            "X-Atlassian-Webhook-Flow": "Primary",
        }
        if secret:
            headers["X-Hub-Signature"] = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        threading.Thread(target=post, args=(raw, headers), daemon=True).start()

    return echo
