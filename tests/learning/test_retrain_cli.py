"""`itsm-triage retrain` answers what it cannot do with a clear message and the right exit status (no training)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.engine import Engine

from service.cli import main
from service.domain.tables import utcnow
from service.learning import lease
from service.settings import Settings


def _env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ITSM_DATABASE_URL": settings.database_url,
        "ITSM_VAR_DIR": str(tmp_path / "var"),
        "ITSM_LEARNING__CACHE_DIR": str(tmp_path / "cache"),
        **extra,
    }


def test_retrain_without_enough_reviews_says_so_and_changes_nothing(
    loop_engine: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, _ = loop_engine
    result = CliRunner().invoke(main, ["retrain"], env=_env(settings, tmp_path))
    assert result.exit_code == 0, result.output
    assert "nothing to learn yet: 0 reviewed ticket(s) the live adapter has not learnt from" in result.output
    listed = CliRunner().invoke(main, ["adapters", "list"], env=_env(settings, tmp_path))
    assert "v1       live" in listed.output and "v2" not in listed.output  # the shipped adapter, registered once


def test_retrain_refuses_a_second_run_and_another_base(loop_engine: tuple[Settings, Engine], tmp_path: Path) -> None:
    settings, engine = loop_engine
    env = _env(settings, tmp_path)
    assert lease.claim(engine, "retrain", "service:schedule@worker-1:7", 600)
    busy = CliRunner().invoke(main, ["retrain"], env=env)
    assert busy.exit_code == 1 and "retrain is running elsewhere (service:schedule@worker-1:7" in busy.output
    lease.release(engine, "retrain", "service:schedule@worker-1:7")
    other = CliRunner().invoke(main, ["retrain"], env={**env, "ITSM_MODEL__BASE": "example-org/other-7b"})
    assert other.exit_code == 1 and "ITSM_MODEL__BASE is 'example-org/other-7b'" in other.output
    # an expired lease is taken over
    assert lease.claim(engine, "retrain", "crashed@host:1", 1)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE learning_lease SET lease_until = ? WHERE name = 'retrain'", (utcnow() - timedelta(minutes=1),)
        )
    assert lease.claim(engine, "retrain", "cli:ops@host:2", 600)
