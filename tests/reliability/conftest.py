"""Reliability suite fixtures: whole service stacks on private servers, torn down after use.

Hypothesis runs without an on-disk example database so CI runs stay clean.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.reliability.harness import Stack

settings.register_profile("reliability", database=None)
settings.load_profile("reliability")

_REQUIRED = ("redis-server", "redis-cli", "runuser")


def _skip_without_servers() -> None:
    missing = [b for b in _REQUIRED if shutil.which(b) is None]
    if missing:
        pytest.skip(f"reliability stack needs {missing}")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Private PostgreSQL + Redis + fake Jira, one API and one worker (fake model), shared by a module."""
    _skip_without_servers()
    with Stack() as st:
        st.api()
        st.worker()
        yield st


@pytest.fixture
def fresh_stack() -> Iterator[Stack]:
    """Servers and fake Jira only; the test starts the API/worker it needs with its own settings."""
    _skip_without_servers()
    with Stack() as st:
        yield st
