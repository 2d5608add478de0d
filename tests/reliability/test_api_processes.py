"""`ITSM_API__PROCESSES`: several API processes share the port and one set of metrics; refused on SQLite."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from click.testing import CliRunner

from service.cli import main
from tests.reliability.harness import Stack, jira_ticket, post


def test_two_api_processes_store_every_delivery_once_and_report_metrics_together(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    st = fresh_stack
    metrics_dir = tmp_path / "metrics"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file must not be added in
    api = st.api(ITSM_API__PROCESSES="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    deliveries = [jira_ticket(70000 + n, delivery_id=f"procs-{n}") for n in range(40)]
    with httpx.Client() as client, ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda d: post(client, api.url, d).status_code, deliveries + deliveries[:10]))
        text = client.get(api.url + "/metrics").text
    assert codes[:40] == [202] * 40 and codes[40:] == [200] * 10
    assert st.ledger is not None
    assert st.ledger.scalar("SELECT count(*) FROM inbound_event WHERE delivery_id LIKE 'procs-%'") == 40
    # both processes started (each writes its live gauges) and the scrape adds up every process's counters
    pids = {m.group(1) for f in metrics_dir.iterdir() if (m := re.match(r"gauge_livemin_(\d+)\.db", f.name))}
    assert len(pids) == 2, sorted(f.name for f in metrics_dir.iterdir())
    counted = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^itsm_webhooks_total\{outcome="(\w+)",source="jira"\} (\S+)$', text, re.M)
    }
    assert counted == {"accepted": 40.0, "duplicate": 10.0}, text[:2000]


def test_several_processes_on_sqlite_are_refused_with_a_reason(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--dev", "--port", "1"],
        env={
            "ITSM_API__PROCESSES": "2",
            "ITSM_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
            "ITSM_VAR_DIR": str(tmp_path),
        },
    )
    assert result.exit_code == 2, result.output
    assert "needs PostgreSQL" in result.output
