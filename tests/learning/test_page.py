"""The Adapters page (admins only) and `itsm-triage adapters`: the same registry, the same actions, audit-logged."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.cli import main
from service.learning import registry
from service.settings import Settings
from tests.learning.fixtures import adapter_dir
from tests.review.conftest import PASSWORD, add_user, audit_rows, build_app
from tests.review.test_ui import login

XSS = "<script>alert(1)</script>"
GATE = {
    "n": 40,
    "confidence": 0.975,
    "fields": {
        "queue": {
            "n": 40,
            "live": {"macro_f1": 0.41, "accuracy": 0.5, "ece": 0.08},
            "candidate": {"macro_f1": 0.52, "accuracy": 0.6, "ece": 0.06},
            "live_llm_only": {"macro_f1": 0.3},
            "candidate_llm_only": {"macro_f1": 0.45},
            "macro_f1_margin": 0.11,
            "macro_f1_margin_lower": -0.01,
            "macro_f1_margin_upper": 0.2,
            "new_labels": {"Printers": {"n": 5, "candidate": 4, "candidate_llm_only": 3}},
        }
    },
    "verdict": {"passed": False, "findings": ["no field is better with 97.5% confidence"]},
}


@pytest.fixture
def cfg(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={"learning": settings.learning.model_copy(update={"cache_dir": tmp_path / "cache"})}
    )


@pytest.fixture
def page(cfg: Settings, engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    """The review app with an admin and an agent, v1 live and v2 a candidate the gate refused."""
    for role in ("agent", "admin"):
        add_user(engine, role, role, password=PASSWORD)
    registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    v2 = registry.register(engine, cfg, adapter_dir(tmp_path, "retrained"), actor="service:retrain", parent_id=1)
    registry.record_gate(engine, v2.id or 0, passed=False, report=GATE, reason=f"refused by the gate: {XSS}")
    with TestClient(build_app(cfg, engine), base_url="https://testserver", follow_redirects=False) as c:
        yield c


def _status(engine: Engine, version: str) -> str:
    with Session(engine) as s:
        return registry.by_version(s, version).status


def test_only_admins_see_the_adapters_page(page: TestClient) -> None:
    assert page.get("/review/adapters").status_code == 303  # to the login form
    login(page, "agent")
    assert page.get("/review/adapters").status_code == 403
    assert 'href="/review/adapters"' not in page.get("/review/").text


def test_the_page_shows_versions_status_and_the_gate_figures_side_by_side(page: TestClient) -> None:
    login(page, "admin")
    html = page.get("/review/adapters").text
    assert 'href="/review/adapters"' in page.get("/review/").text  # the admin's nav link
    assert re.search(r'v2</a>.*?<span class="badge ">candidate</span>.*?failed', html, re.S)
    assert re.search(r'v1</a>.*?<span class="badge approved">live</span>', html, re.S)
    assert "queue F1 0.410 → 0.520 (+0.110); ECE 0.080 → 0.060" in html
    assert XSS not in html and "&lt;script&gt;" in html  # reasons render as text
    detail = page.get("/review/adapters/v2").text
    assert "+0.110 (-0.010 … +0.200)" in detail and "0.300 → 0.450" in detail
    assert "New queue <strong>Printers</strong>: 4 of 5 held-out tickets right (3 by the LLM head alone)" in detail
    assert page.get("/review/adapters/v9").status_code == 404


def test_admin_actions_need_csrf_a_reason_and_the_gate_or_an_override(page: TestClient, engine: Engine) -> None:
    token = login(page, "admin")
    assert page.post("/review/adapters/v2/promote", data={}).status_code == 403  # no CSRF token
    refused = page.post("/review/adapters/v2/promote", data={"csrf_token": token})
    assert refused.status_code == 409 and "has not passed the gate" in refused.text
    assert _status(engine, "v2") == "candidate"
    done = page.post("/review/adapters/v2/promote", data={"csrf_token": token, "override": "true"})
    assert done.status_code == 303 and done.headers["location"] == "/review/adapters?done=promoted"
    assert (_status(engine, "v1"), _status(engine, "v2")) == ("retired", "live")
    assert page.post("/review/adapters/rollback", data={"csrf_token": token, "reason": " "}).status_code == 422
    back = page.post("/review/adapters/rollback", data={"csrf_token": token, "reason": "agents correct it more"})
    assert back.status_code == 303 and (_status(engine, "v1"), _status(engine, "v2")) == ("live", "retired")
    assert page.post("/review/adapters/v2/shadow", data={"csrf_token": token}).status_code == 303
    assert _status(engine, "v2") == "shadow"
    assert page.post("/review/adapters/v2/retire", data={"csrf_token": token, "reason": "enough"}).status_code == 303
    assert _status(engine, "v2") == "retired"
    actions = [(a.actor, a.action, a.target_id) for a in audit_rows(engine) if a.target_type == "adapter"]
    assert ("admin", "adapter_live", "v2") in actions and ("admin", "adapter_retired", "v2") in actions
    assert "Done: rolled back" in page.get("/review/adapters?done=rolled-back").text
    assert "Done" not in page.get("/review/adapters?done=<b>hi</b>").text


def test_the_cli_lists_the_same_registry_and_acts_on_it(page: TestClient, cfg: Settings, engine: Engine) -> None:
    env = {"ITSM_DATABASE_URL": cfg.database_url, "ITSM_LEARNING__CACHE_DIR": str(cfg.learning.cache_dir)}
    runner = CliRunner()
    listed = runner.invoke(main, ["adapters", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output[listed.output.index("[") :])
    login(page, "admin")
    html = page.get("/review/adapters").text
    shown = re.findall(r'<a href="/review/adapters/(v\d+)">.*?<span class="badge [a-z]*">([a-z]+)</span>', html, re.S)
    assert [(r["version"], r["status"]) for r in rows] == shown == [("v2", "candidate"), ("v1", "live")]
    refused = runner.invoke(main, ["adapters", "promote", "v2"], env=env)
    assert refused.exit_code == 1 and "has not passed the gate" in refused.output
    forced = runner.invoke(main, ["adapters", "promote", "v2", "--force", "--reason", "trying it"], env=env)
    assert forced.exit_code == 0 and "v2: candidate -> live" in forced.output
    assert runner.invoke(main, ["adapters", "promote", "v7"], env=env).exit_code == 2
    back = runner.invoke(main, ["adapters", "rollback", "--reason", "worse"], env=env)
    assert back.exit_code == 0 and "v1: retired -> live" in back.output
    shown = json.loads(runner.invoke(main, ["adapters", "show", "v2"], env=env).output)
    assert shown["status"] == "retired" and shown["report"]["fields"]["queue"]["n"] == 40
    assert "reason" in shown and shown["changed"].endswith(f"by cli:{_user()}")


def _user() -> str:
    import getpass

    return getpass.getuser()
