"""The first day as one story, with the real model: import the history, hold out the newest tickets, train, evaluate
against TF-IDF, triage live tickets with every field in shadow, read shadow precision off the dashboard, raise a
field to auto. Slow: it trains a (tiny) adapter and runs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.cli import main
from service.domain.tables import Suggestion, Ticket, Triage
from service.queue import DRAFT_TASK
from service.settings import FieldPolicy, Settings
from tests.fakes.history_jira import HistoryJira
from tests.history.conftest import cli, rows
from tests.review.conftest import Accounts, build_app
from tests.workers.conftest import Recorder, seed_event
from workers.drafts import DraftContext, draft_triage
from workers.model_backend import load_triager
from workers.pipeline import PipelineContext, triage_event

pytestmark = pytest.mark.slow
CACHE = Path(__file__).resolve().parents[2] / "var" / "models"
FIELDS = ("queue", "priority")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the story trains a model, once is enough."""
    from service.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'itsm.db'}"
    upgrade(Settings(database_url=url))
    return url


def test_first_day_import_train_evaluate_shadow_dashboard_raise(
    jira_site: Callable[..., HistoryJira], tmp_path: Path, settings: Settings, engine: Engine, accounts: Accounts
) -> None:
    if not (CACHE / "smollm2-135m-instruct" / "hf").exists():
        pytest.skip("bundled base model absent (make setup fetches it)")
    runner = CliRunner()
    env = {"ITSM_MODEL__CACHE_DIR": str(CACHE)}

    # 1. import the history and hold out the newest 30%. The queue comes from the JSM request type here (7 values):
    # `evaluate` infers the label columns of its test file, and a 45-ticket hold-out cannot show 20 queues.
    fake = jira_site(tickets=150, page_cap=50)
    data = tmp_path / "history.jsonl"
    assert cli(fake, data, "--label", "queue=request_type", "--label", "priority=priority").exit_code == 0
    split = runner.invoke(main, ["history", "split", "--data", str(data), "--recent", "0.3"])
    assert split.exit_code == 0, split.output
    train_file, recent_file = tmp_path / "history.train.jsonl", tmp_path / "history.recent.jsonl"

    # 2. train on the older tickets, unchanged `train` (the label columns are inferred from the file)
    adapter = tmp_path / "adapter"
    trained = runner.invoke(
        main,
        ["train", "--data", str(train_file), "--out", str(adapter), "--max-steps", "3", "--max-tokens", "32",
         "--lora-layers", "2", "--time-budget", "10"],
        env=env,
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    meta = json.loads((adapter / "triage.json").read_text())
    assert set(meta["fields"]) == set(FIELDS)

    # 3. evaluate on the recent tickets against a TF-IDF baseline trained on the same older tickets
    report = tmp_path / "report.json"
    evaluated = runner.invoke(
        main,
        ["evaluate", "--adapter", str(adapter), "--data", str(recent_file), "--train-data", str(train_file),
         "--no-reply", "--report", str(report)],
        env=env,
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    for field in FIELDS:
        assert f"{field:<10} model - tfidf macro-F1" in evaluated.output
    assert set(json.loads(report.read_text())["fields"]) == set(FIELDS)

    # 4. go live with every field in shadow: live tickets are triaged, nothing is written
    shadow = settings.model_copy(
        update={
            "policy": {f: FieldPolicy(mode="shadow", threshold=0.5) for f in FIELDS},
            "model": settings.model.model_copy(
                update={"adapter": str(adapter), "cache_dir": CACHE, "max_new_tokens": 16}
            ),
        }
    )
    triager = load_triager(shadow)
    live = rows(recent_file)[:10]
    queued = Recorder()
    for i, r in enumerate(live):
        event = seed_event(engine, subject=r["subject"], body=r["body"], external_id=f"{90000 + i}")
        assert triage_event(PipelineContext(engine, shadow, lambda: triager, queued), event).triaged == [event]
    for triage_id in queued.ids(DRAFT_TASK):  # labels first, drafts after: the draft stage
        draft_triage(DraftContext(engine, shadow, lambda: triager, queued), triage_id)
    with Session(engine) as s:
        triages = s.exec(select(Triage).order_by(col(Triage.id))).all()
        assert len(triages) == len(live)
        assert all(t.decisions[f]["decision"] == "shadow" for t in triages for f in FIELDS)

    # 5. agents review: approve each draft and correct the fields to what the ticket really was
    client = TestClient(build_app(shadow, engine), base_url="https://testserver", follow_redirects=False)
    agent = accounts.headers("agent")
    right = dict.fromkeys(FIELDS, 0)
    with Session(engine) as s:
        reviewed = s.exec(select(Suggestion, Triage).join(Triage, col(Triage.id) == col(Suggestion.triage_id))).all()
        position = {t.id: int(t.external_id) - 90000 for t in s.exec(select(Ticket)).all()}
    assert len(reviewed) == len(live)  # every live ticket got a draft to review
    for sug, triage in reviewed:
        truth = live[position[triage.ticket_id]]
        assert client.post(f"/api/v1/suggestions/{sug.id}/approve", json={}, headers=agent).status_code == 200
        fixes = {}
        for f in FIELDS:
            predicted = triage.predictions[f]["label"]
            known = truth[f] in triage.predictions[f]["probabilities"]
            right[f] += predicted == truth[f] or not known  # a label the adapter never saw cannot be set
            if predicted != truth[f] and known:
                fixes[f] = truth[f]
        if fixes:
            fixed = client.post(
                f"/api/v1/tickets/{triage.ticket_id}/corrections", json={"fields": fixes}, headers=agent
            )
            assert fixed.status_code == 200, fixed.text

    # 6. the dashboard shows each field's shadow precision
    stats = client.get("/api/v1/stats", params={"days": 2}, headers=accounts.headers("viewer")).json()["total"]
    assert stats["shadow_reviewed"] == dict.fromkeys(FIELDS, len(live))
    assert stats["shadow_precision"] == {f: right[f] / len(live) for f in FIELDS}

    # 7. the operator raises queue to auto: the next ticket's queue is applied, priority stays in shadow
    raised = shadow.model_copy(
        update={"policy": {"queue": FieldPolicy(mode="auto", threshold=0.0), "priority": FieldPolicy(mode="shadow")}}
    )
    r = rows(recent_file)[10]
    event = seed_event(engine, subject=r["subject"], body=r["body"], external_id="99999")
    assert triage_event(PipelineContext(engine, raised, lambda: triager, Recorder()), event).triaged == [event]
    with Session(engine) as s:
        ticket = s.exec(select(Ticket).where(Ticket.external_id == "99999")).one()
        last = s.exec(select(Triage).where(Triage.ticket_id == ticket.id)).one()
    assert last.decisions["queue"]["decision"] == "auto" and last.decisions["priority"]["decision"] == "shadow"
