"""`itsm-triage run` end to end: a posted jira_issue_created webhook becomes exactly one internal triage comment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import free_port
from tests.conftest import JIRA_SECRET, fixture_bytes, fixture_headers
from tests.fakes.fake_jira import FakeJira


@pytest.fixture
def running_service(tmp_path: Path, fake_jira: FakeJira) -> Iterator[str]:
    """`itsm-triage run` in a fresh directory (embedded SQLite + broker), writing back to the fake Jira."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ITSM_")},
        "ITSM_JIRA__WEBHOOK_SECRET": JIRA_SECRET,
        "ITSM_JIRA__BASE_URL": fake_jira.url,
        "ITSM_JIRA__EMAIL": fake_jira.email,
        "ITSM_JIRA__API_TOKEN": fake_jira.api_token,
        "ITSM_MODEL__BACKEND": "fake",  # the plumbing under test; the real model has its own slow tests
        "ITSM_WORKER__SWEEP_INTERVAL_S": "2",
    }
    # Output goes to a file, not a pipe: nobody reads a pipe while the test runs, and once its 64 KiB buffer is
    # full (the API, the worker and beat all log to it) every process blocks on its next log line.
    log_path = tmp_path / "run.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")
                raise RuntimeError(f"itsm-triage run did not come up:\n{output[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log_file.close()


def test_run_turns_the_fixture_webhook_into_one_internal_comment(
    running_service: str, fake_jira: FakeJira, tmp_path: Path
) -> None:
    body, headers = fixture_bytes("jira_issue_created.json"), fixture_headers("jira_issue_created.headers.json")
    response = httpx.post(f"{running_service}/webhooks/jira", content=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    again = httpx.post(f"{running_service}/webhooks/jira", content=body, headers=headers, timeout=10)
    assert again.status_code == 200  # Jira's retry of the same delivery

    issue = fake_jira.issue("10231")
    deadline = time.monotonic() + 90
    while not issue.internal_comments() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # give a (wrong) second write the chance to show up before counting
    assert len(issue.internal_comments()) == 1, (tmp_path / "run.log").read_text(errors="replace")[-4000:]
    assert issue.public_comments() == []  # nothing reaches the customer before an agent approves
    assert "Suggested" in issue.internal_comments()[0].plain or "suggest" in issue.internal_comments()[0].plain.lower()
    # Default policy is "suggest" for every field: nothing is written to the ticket's fields.
    assert issue.labels == [] and issue.priority == {"id": "3", "name": "Medium"}
