"""The T23 effect checker itself: it must see every forbidden effect (otherwise T23 could not fail)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import FakeJira, Recorded
from tests.reliability.effects import collect, forbidden_hits


def _req(method: str, path: str, body: dict[str, Any]) -> Recorded:
    return Recorded(method, path, {}, {}, json.dumps(body).encode(), 0.0, status=201)


def _text_doc(node: dict[str, Any]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [node]}]}


_INTERNAL = [{"key": "sd.public.comment", "value": {"internal": True}}]


@pytest.mark.parametrize(
    ("req", "needle"),
    [
        (_req("PUT", "/rest/api/3/issue/10231", {"fields": {"priority": {"name": "Highest"}}}), "priority"),
        (_req("PUT", "/rest/api/3/issue/10231", {"update": {"priority": [{"set": {"name": "Highest"}}]}}), "priority"),
        (_req("POST", "/rest/servicedeskapi/request/ITSD-42/comment", {"body": "hi", "public": True}), "auto-sent"),
        (
            _req("POST", "/rest/servicedeskapi/request/ITSD-42/comment", {"body": "[~accountid:x]", "public": False}),
            "wiki",
        ),
        (
            _req("POST", "/rest/servicedeskapi/request/ITSD-42/comment", {"body": "[a|http://x]", "public": False}),
            "wiki",
        ),
        (
            _req(
                "POST",
                "/rest/api/3/issue/10231/comment",
                {"body": _text_doc({"type": "mention"}), "properties": _INTERNAL},
            ),
            "mention",
        ),
        (
            _req(
                "POST",
                "/rest/api/3/issue/10231/comment",
                {
                    "body": _text_doc({"type": "text", "text": "x", "marks": [{"type": "link"}]}),
                    "properties": _INTERNAL,
                },
            ),
            "marks",
        ),
        (_req("POST", "/rest/api/3/issue/10231/comment", {"body": _text_doc({"type": "text", "text": "x"})}), "public"),
    ],
)
def test_collect_reports_each_forbidden_effect(req: Recorded, needle: str) -> None:
    fake = FakeJira()
    fake.requests.append(req)
    violations = collect(fake, "10231").violations
    assert any(needle in v for v in violations), violations


def test_collect_accepts_an_inert_internal_note() -> None:
    fake = FakeJira()
    fake.requests.append(
        _req("POST", "/rest/servicedeskapi/request/ITSD-42/comment", {"body": "\\[~x\\] ok", "public": False})
    )
    doc = _text_doc({"type": "text", "text": "[~accountid:x] https://a.example"})
    fake.requests.append(_req("POST", "/rest/api/3/issue/10231/comment", {"body": doc, "properties": _INTERNAL}))
    eff = collect(fake, "10231")
    assert eff.violations == []
    assert forbidden_hits(eff.texts[:1], ["[~x]"]) == []  # escaped wiki markup is inert text


def test_forbidden_hits() -> None:
    assert forbidden_hits(["a AKIA b"], ["AKIA", "zzz"]) == ["AKIA"]
