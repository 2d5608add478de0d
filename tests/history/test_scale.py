"""A 10,000-ticket import from a fake Jira in its own process: every ticket accounted for, memory flat, and the
file is one `train` reads. Slow (about a minute and a half on two cores: the secret scrubber is most of it)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.data import load_tickets
from models.language import detect
from service.cli.history import build_source, default_labels
from service.history.importer import default_checkpoint, run_import
from service.history.jira import jira_plan
from service.history.summary import Summary
from service.settings import Settings
from tests.fakes.history_corpus import PastTickets
from tests.history.test_jira_import import expected_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TICKETS = 10_000


def rss_mib() -> float:
    """This process's resident set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def jira_process() -> Iterator[dict[str, str]]:
    """`python -m tests.fakes jira --history 10000` in its own process (its memory is not ours); its settings."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "jira", "--history", str(TICKETS)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        env = json.loads(proc.stdout.readline())["env"]
        yield {k.removeprefix("ITSM_JIRA__").lower(): v for k, v in env.items()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ten_thousand_tickets_stream_with_flat_memory_into_a_training_file(
    jira_process: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(jira=jira_process)
    labels = default_labels(settings, "jira")
    source = build_source(
        settings,
        "jira",
        jira_plan(query=None, since=None, projects=[]),
        labels,
        page_size=100,
        concurrency=4,
        skip_authors=(),
        on_wait=None,
    )
    out = tmp_path / "history.jsonl"
    rss: dict[int, float] = {}

    def sample(summary: Summary) -> None:
        if summary.read in (2_000, TICKETS):
            rss[summary.read] = rss_mib()

    try:
        result = run_import(
            source,
            out=out,
            checkpoint_path=default_checkpoint(out),
            checkpoint=None,
            options={},
            labels=list(labels),
            detect_language=detect,
            on_page=sample,
        )
    finally:
        source.close()
    want = expected_rows(PastTickets(TICKETS))
    assert result.complete and result.summary.read == TICKETS and result.summary.written == len(want)
    # Streamed: 8,000 more tickets cost the dedupe digests (~150 bytes each), not the tickets (~2 KB each).
    assert rss[TICKETS] - rss[2_000] < 12, rss
    tickets, fields = load_tickets(out)  # exactly what `itsm-triage train --data` reads, fields inferred
    assert fields == ["queue", "priority"] and len(tickets) == len(want)
    assert [t.id for t in tickets[:3]] == [f"jira:{t.key}" for t in want[:3]]
