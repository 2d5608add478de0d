"""Bad input to `itsm-triage history …` gets a clear error and loses nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from tests.fakes.history_jira import HistoryJira
from tests.fakes.history_servicenow import HistoryServiceNow
from tests.history.conftest import cli, rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "queue"], "expected NAME=FIELD"),
        (["--label", "subject=summary"], "a text column of the training file"),
        (["--label", "queue=components", "--label", "queue=labels"], "given twice"),
        (["--label", "queue=comp onents"], "FIELD must be a field id"),
        (["--query", "project = SD ORDER BY key"], "without ORDER BY"),
        (["--since", "2999-01-01"], "is in the future"),
        (["--since", "last year"], "does not match the format"),
        (["--project", "not a key"], "is not a Jira project key"),
        (["--limit", "0"], "0 is not in the range"),
    ],
)
def test_malformed_options_are_refused_before_any_request(
    jira_site: Callable[..., HistoryJira], tmp_path: Path, args: list[str], message: str
) -> None:
    fake = jira_site(tickets=3)
    result = cli(fake, tmp_path / "out.jsonl", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out.jsonl").exists() and not fake.requests


def test_servicenow_options_that_only_jira_has_or_it_cannot_run(
    sn_instance: Callable[..., HistoryServiceNow], tmp_path: Path
) -> None:
    fake = sn_instance(tickets=3)
    assert "--project is for Jira" in cli(fake, tmp_path / "a.jsonl", "--project", "SD").output
    assert "^NQ is not supported" in cli(fake, tmp_path / "a.jsonl", "--query", "active=true^NQactive=false").output
    assert "without ORDERBY" in cli(fake, tmp_path / "a.jsonl", "--query", "ORDERBYnumber").output
    assert not fake.requests


def test_missing_or_wrong_credentials_and_a_query_jira_rejects(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["history", "import", "--source", "jira", "--out", str(tmp_path / "x.jsonl")])
    assert missing.exit_code == 2 and "needs ITSM_JIRA__BASE_URL, ITSM_JIRA__EMAIL and ITSM_JIRA__API_TOKEN" in (
        missing.output
    )
    fake = jira_site(tickets=3)
    wrong = cli(fake, tmp_path / "w.jsonl", ITSM_JIRA__API_TOKEN="not-the-token")
    assert wrong.exit_code == 2 and "401" in wrong.output and "check the credentials" in wrong.output
    bad_jql = cli(fake, tmp_path / "q.jsonl", "--query", "colour = blue")
    assert bad_jql.exit_code == 2 and "Jira rejected the query" in bad_jql.output
    assert "Field 'colour' does not exist" in bad_jql.output


def test_existing_files_are_never_overwritten_or_mixed_without_being_asked(
    jira_site: Callable[..., HistoryJira], tmp_path: Path
) -> None:
    fake = jira_site(tickets=12, page_cap=5)
    out = tmp_path / "t.jsonl"
    out.write_text('{"id": "mine", "subject": "s", "body": "b"}\n')
    refused = cli(fake, out)
    assert refused.exit_code == 2 and "exists and has no checkpoint" in refused.output
    assert out.read_text() == '{"id": "mine", "subject": "s", "body": "b"}\n'

    assert cli(fake, out, "--overwrite", "--limit", "3").exit_code == 0
    checkpoint = tmp_path / "t.jsonl.checkpoint.json"
    assert json.loads(checkpoint.read_text())["summary"]["written"] == 3
    other = cli(fake, out, "--query", "project = SD")
    assert other.exit_code == 2 and "belongs to another import (query was None, now 'project = SD')" in other.output
    assert len(rows(out)) == 3

    out.write_text(out.read_text()[:20])
    shorter = cli(fake, out)
    assert shorter.exit_code == 2 and "is shorter than its checkpoint says" in shorter.output

    checkpoint.write_text("{not json")
    broken = cli(fake, out)
    assert broken.exit_code == 2 and "unreadable checkpoint" in broken.output
    kept = out.read_bytes()
    cannot_start = cli(fake, out, "--overwrite", ITSM_JIRA__BASE_URL="")
    assert cannot_start.exit_code == 2 and "needs ITSM_JIRA__BASE_URL" in cannot_start.output
    assert out.read_bytes() == kept and checkpoint.read_text() == "{not json"  # --overwrite waits for a start
    assert cli(fake, out, "--overwrite").exit_code == 0 and len(rows(out)) == 12


def test_split_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    data = tmp_path / "one.jsonl"
    data.write_text('{"id": "a"}\n')
    runner = CliRunner()
    result = runner.invoke(main, ["history", "split", "--data", str(data)])
    assert result.exit_code == 2 and "too few" in result.output
    data.write_text("".join(f'{{"id": "{i}"}}\n' for i in range(10)))
    result = runner.invoke(main, ["history", "split", "--data", str(data), "--recent", "1.5"])
    assert result.exit_code == 2 and "between 0 and 1" in result.output
    result = runner.invoke(main, ["history", "split", "--data", str(data), "--train-out", str(data)])
    assert result.exit_code == 2 and "three different files" in result.output
    assert len(data.read_text().splitlines()) == 10
