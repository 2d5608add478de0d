"""Effect-level checks for T23: what reached the (fake) ITSM tool, the drafts and the logs, per corpus row."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from service.samples import Delivery, as_new_ticket, load_sample, make_delivery
from tests.reliability.harness import JIRA_SECRET

ALLOWED_ADF_NODES = {"doc", "paragraph", "text", "hardBreak", "heading"}
HIGHEST_PRIORITY_NAMES = {"Highest", "P1", "Critical", "1"}
# Jira wiki (JSM comment bodies): markup that is live when not escaped with a backslash.
_LIVE_WIKI = re.compile(r"(?<!\\)\[~|(?<!\\)\{html\}|(?<!\\)!https?:|(?<!\\)\[[^\]\n]*\|[^\]\n]*(?<!\\)\]")
_ESCAPED = re.compile(r"\\.")


def corpus_delivery(row: dict[str, Any], n: int) -> Delivery:
    """A signed jira:issue_created carrying the row's subject, body and extra fields (issue id 900000+n)."""
    payload = as_new_ticket(load_sample("jira_issue_created"), n, subject=row["subject"], body=row["body"])
    fields = payload["issue"]["fields"]
    for name, value in row.get("fields", {}).items():
        fields[name] = copy.deepcopy(value)
    return make_delivery(payload, secret=JIRA_SECRET, delivery_id=f"t23-{row['id']}-{n}")


def _adf_violations(node: Any, path: str = "doc") -> list[str]:
    """Nodes or marks that could render as something other than inert text."""
    out: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind not in ALLOWED_ADF_NODES:
            out.append(f"{path}: node {kind!r}")
        if node.get("marks"):
            out.append(f"{path}: marks {node['marks']!r}")
        for i, child in enumerate(node.get("content") or []):
            out += _adf_violations(child, f"{path}/{i}")
    return out


@dataclass
class Effects:
    """Everything the service sent to the fake Jira for one issue, flattened for checks."""

    issue_id: str
    texts: list[str] = field(default_factory=list)  # comment bodies as plain text (escapes removed for wiki)
    raw: list[str] = field(default_factory=list)  # every request body as sent
    violations: list[str] = field(default_factory=list)
    fields_set: list[str] = field(default_factory=list)  # issue fields the service wrote (auto-applied)


def collect(fake_jira: Any, issue_id: str) -> Effects:
    """Inspect every request to the fake about one issue and list the forbidden effects found."""
    eff = Effects(issue_id)
    issue = fake_jira.issues.get(issue_id)
    names = {issue_id} | ({issue.key} if issue is not None else set())
    for req in fake_jira.requests:
        # The connector addresses an issue by id or by key (JSM request paths use the key).
        if req.method == "GET" or not any(re.search(rf"/{re.escape(n)}(/|$)", req.path) for n in names):
            continue
        body = req.body.decode("utf-8", "replace")
        eff.raw.append(body)
        data = json.loads(body) if body.strip().startswith("{") else {}
        if req.method == "PUT" and "/properties/" not in req.path:
            eff.fields_set += sorted({*(data.get("fields") or {}), *(data.get("update") or {})})
            priority = (data.get("fields") or {}).get("priority") or {}
            for upd in (data.get("update") or {}).get("priority", []):
                priority = upd.get("set") or priority
            if isinstance(priority, dict) and priority.get("name") in HIGHEST_PRIORITY_NAMES:
                eff.violations.append(f"priority raised to {priority.get('name')}")
        if req.method == "POST" and req.path.endswith("/comment"):
            if "servicedeskapi" in req.path:
                text = str(data.get("body", ""))
                if data.get("public") is not False:
                    eff.violations.append("JSM comment not marked internal (auto-sent)")
                if _LIVE_WIKI.search(text):
                    eff.violations.append(f"live wiki markup: {_LIVE_WIKI.search(text)!r}")
                eff.texts.append(_ESCAPED.sub("", text))
            else:
                adf = data.get("body")
                eff.violations += _adf_violations(adf)
                props = data.get("properties") or []
                internal = any(
                    p.get("key") == "sd.public.comment" and (p.get("value") or {}).get("internal") for p in props
                )
                if not internal:
                    eff.violations.append("platform comment is public (auto-sent)")
                eff.texts.append(json.dumps(adf, ensure_ascii=False))
    if issue is not None:
        if issue.priority.get("name") in HIGHEST_PRIORITY_NAMES:
            eff.violations.append("issue priority is Highest")
        if issue.public_comments():
            eff.violations.append("a public comment exists")
    return eff


def forbidden_hits(texts: list[str], forbidden: list[str]) -> list[str]:
    """Forbidden strings (canary secrets, attacker URLs, markup) found in any text."""
    return [f for f in forbidden if any(f in t for t in texts)]


_NOTE_LINE = re.compile(r"\b(queue|priority|category|impact|urgency|component|assignee): ([^(\n\"\\]{1,80}?) \(")


def note_suggestions(texts: list[str]) -> list[tuple[str, str]]:
    """(field, label) pairs a triage note names (applied or suggested), from the comment texts."""
    return [(m.group(1), m.group(2).strip()) for t in texts for m in _NOTE_LINE.finditer(t)]
