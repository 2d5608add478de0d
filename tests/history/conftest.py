"""History-import fixtures: fake Jira / ServiceNow sites with resolved tickets, the CLI, and in-process runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from models.language import detect
from service.cli import main
from service.cli.history import build_source, default_labels
from service.history.importer import ImportResult, default_checkpoint, open_checkpoint, run_import
from service.history.jira import jira_plan
from service.history.records import HistorySource
from service.history.servicenow import servicenow_plan
from service.settings import Settings
from tests.fakes.history_jira import HistoryJira
from tests.fakes.history_servicenow import HistoryServiceNow
from tests.review.conftest import accounts, app, client  # noqa: F401  (the review app for the dashboard test)

Fake = HistoryJira | HistoryServiceNow


@pytest.fixture
def jira_site() -> Iterator[Callable[..., HistoryJira]]:
    """Start fake Jira sites with a history: `jira_site(tickets=120, page_cap=7)`."""
    started: list[HistoryJira] = []

    def start(**kw: Any) -> HistoryJira:
        fake = HistoryJira(**kw)
        fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def sn_instance() -> Iterator[Callable[..., HistoryServiceNow]]:
    """Start fake ServiceNow instances with a history: `sn_instance(tickets=120)`."""
    started: list[HistoryServiceNow] = []

    def start(**kw: Any) -> HistoryServiceNow:
        fake = HistoryServiceNow(**kw)
        fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def env_for(fake: Fake, **overrides: str) -> dict[str, str]:
    """The ITSM_* variables that point the CLI at a fake."""
    prefix = "ITSM_JIRA__" if isinstance(fake, HistoryJira) else "ITSM_SERVICENOW__"
    env = {prefix + k.upper(): str(v) for k, v in fake.settings().items()}
    env.update(overrides)
    return env


def source_of(fake: Fake) -> str:
    return "jira" if isinstance(fake, HistoryJira) else "servicenow"


def cli(fake: Fake, out: Path, *args: str, **env: str) -> Result:
    """`itsm-triage history import --source <fake's> --out OUT ARGS` against the fake."""
    return CliRunner().invoke(
        main, ["history", "import", "--source", source_of(fake), "--out", str(out), *args], env=env_for(fake, **env)
    )


def rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of an output file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def import_in_process(
    fake: Fake,
    out: Path,
    *,
    sleep: Callable[[float], None] | None = None,
    on_page: Callable[[Any], None] | None = None,
    limit: int | None = None,
    page_size: int = 100,
) -> ImportResult:
    """The CLI's import wired by hand, so a test can see the waits and act between pages."""
    source = source_of(fake)
    settings = Settings(jira=fake.settings()) if source == "jira" else Settings(servicenow=fake.settings())
    labels = default_labels(settings, source)
    base = settings.jira.base_url if source == "jira" else settings.servicenow.instance_url
    options: dict[str, Any] = {
        "base_url": base,
        "query": None,
        "since": None,
        "projects": [],
        "labels": labels,
        "skip_authors": [],
    }
    checkpoint_path = default_checkpoint(out)
    cp = open_checkpoint(out=out, checkpoint_path=checkpoint_path, source=source, options=options, overwrite=False)
    plan = cp.plan if cp else (jira_plan(query=None, since=None, projects=[]) if source == "jira" else
                               servicenow_plan(query=None, since=None))  # fmt: skip
    src: HistorySource = build_source(
        settings,
        source,
        plan,
        labels,
        page_size=page_size,
        concurrency=4,
        skip_authors=(),
        on_wait=None,
        sleep=sleep or time.sleep,
    )
    try:
        return run_import(
            src,
            out=out,
            checkpoint_path=checkpoint_path,
            checkpoint=cp,
            options=options,
            labels=list(labels),
            limit=limit,
            on_page=on_page,
            detect_language=detect,
        )
    finally:
        src.close()
