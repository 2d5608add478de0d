"""Issue 16 item 6: label maps that name labels the live adapter cannot produce, or miss ones it does, are
reported at worker start-up and by `itsm-triage config show`."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from service.cli import main
from service.domain.label_maps import map_warnings
from service.settings import Settings
from workers.model_backend import warn_label_maps

SHIPPED = {"queue": ["Billing and Payments", "IT Support"], "priority": ["P2", "P3", "P4"]}


def test_the_default_priority_maps_name_p1_which_the_shipped_label_set_cannot_produce() -> None:
    found = {(w.setting, w.kind, w.labels) for w in map_warnings(Settings(), SHIPPED)}
    assert found == {
        ("ITSM_JIRA__PRIORITY_MAP", "never_produced", ("P1", "P5")),
        ("ITSM_SERVICENOW__PRIORITY_MAP", "never_produced", ("P1", "P5")),
    }


def test_labels_a_non_empty_map_leaves_out_are_reported_and_an_empty_category_map_is_fine() -> None:
    settings = Settings(
        jira={"priority_map": {"P2": "High", "P3": "Medium"}, "category_map": {"IT Support": "it"}},
        servicenow={"assignment_group_map": {"Billing and Payments": "sys1", "Legal": "sys2"}},
    )
    messages = sorted(w.message() for w in map_warnings(settings, SHIPPED))
    assert messages == [
        "ITSM_JIRA__CATEGORY_MAP does not cover queue labels the adapter produces: Billing and Payments",
        "ITSM_JIRA__PRIORITY_MAP does not cover priority labels the adapter produces: P4",
        "ITSM_SERVICENOW__ASSIGNMENT_GROUP_MAP does not cover queue labels the adapter produces: IT Support",
        "ITSM_SERVICENOW__ASSIGNMENT_GROUP_MAP names queue labels the adapter cannot produce: Legal",
        "ITSM_SERVICENOW__PRIORITY_MAP names priority labels the adapter cannot produce: P1, P5",
    ]
    assert map_warnings(settings, {"urgency": ["1", "2"]}) == []  # fields the adapter does not predict


def test_the_worker_logs_each_mismatch_at_start_up(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.WARNING):
        messages = warn_label_maps(Settings(), SHIPPED)
    assert len(messages) == 2
    # structlog writes through the stdlib once configured (workers), else prints: count the lines either way.
    logged = "\n".join(r.getMessage() for r in caplog.records) + capsys.readouterr().out
    assert logged.count("label_map_mismatch") == 2 and logged.count("P1, P5") == 2


def test_config_show_prints_the_warnings_for_the_shipped_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.adapter import DEFAULT_ADAPTER, META

    if not (DEFAULT_ADAPTER / META).exists():
        pytest.skip("shipped adapter absent")
    monkeypatch.delenv("ITSM_MODEL__BACKEND", raising=False)
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "warning: ITSM_JIRA__PRIORITY_MAP names priority labels the adapter cannot produce: P1, P5" in result.stderr
    assert "ITSM_JIRA__PRIORITY_MAP=" in result.stdout
