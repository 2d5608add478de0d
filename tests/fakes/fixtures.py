"""Pytest fixtures for the fake ITSM servers; tests/conftest.py re-exports them for every test package.

Usage::

    def test_x(fake_jira):
        settings = Settings(jira=fake_jira.settings())
        fake_jira.fail_next(429, headers={"Retry-After": "7"}, method="POST", path="/comment$")
        ...
        assert len(fake_jira.issue("10231").internal_comments()) == 1
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_jira import FakeJira
from tests.fakes.fake_servicenow import FakeServiceNow


@pytest.fixture
def fake_jira() -> Iterator[FakeJira]:
    """A running fake Jira Cloud + JSM site (issue ITSD-42 / id 10231 exists), stopped after the test."""
    fake = FakeJira().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_servicenow() -> Iterator[FakeServiceNow]:
    """A running fake ServiceNow instance (incident INC0010042 exists), stopped after the test."""
    fake = FakeServiceNow().start()
    try:
        yield fake
    finally:
        fake.stop()
