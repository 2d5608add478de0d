"""Knowledge-base test fixtures: the fake ServiceNow Knowledge and Confluence servers, settings pointing at them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.fakes.fake_kb import FakeConfluence, FakeServiceNowKnowledge

DATA = Path(__file__).resolve().parent / "data"


def with_groups(settings: Settings, groups: dict[str, dict[str, Any]]) -> Settings:
    """`settings` with some groups' fields replaced (e.g. {'kb': {...}, 'servicenow': {...}})."""
    data = settings.model_dump()
    for name, values in groups.items():
        data[name] = {**data[name], **values}
    return Settings(**data)


def articles() -> list[dict[str, Any]]:
    """The hand-written labelled knowledge base (tests/knowledge/data/kb_articles.json)."""
    loaded: list[dict[str, Any]] = json.loads((DATA / "kb_articles.json").read_text())
    return loaded


def questions() -> list[dict[str, Any]]:
    """Tickets written for the labelled set: the article that answers each (None: no article does)."""
    return [json.loads(line) for line in (DATA / "kb_questions.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def fake_sn_kb() -> Iterator[FakeServiceNowKnowledge]:
    """A running fake ServiceNow instance serving kb_knowledge (no articles yet)."""
    fake = FakeServiceNowKnowledge().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_confluence() -> Iterator[FakeConfluence]:
    """A running fake Confluence Cloud site with one space, IT (no pages yet)."""
    fake = FakeConfluence().start()
    try:
        yield fake
    finally:
        fake.stop()
