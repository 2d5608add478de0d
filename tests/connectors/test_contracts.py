"""Every request the connectors send (and every answer the fakes give) checked against the contract specs.

Specs: the Jira platform subset (official shapes), the JSM request-comment and ServiceNow incident UNOFFICIAL
specs, and the instance-exported ServiceNow Table API (no schemas: paths and query parameters only). Each
recorded request must hit a documented path and method, use only documented query parameters, and carry a body
valid against the operation's request schema; 2xx answers of the fakes must match the response schema, so the
fakes cannot drift from the contracts the connectors are written against.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema
import pytest

from service.connectors.jira import JiraWriter
from service.connectors.servicenow import ServiceNowWriter
from service.domain.schemas import WriteBack
from service.settings import JiraSettings, ServiceNowSettings
from tests.conftest import SHARED
from tests.fakes import FakeJira, FakeServer, FakeServiceNow
from tests.fakes.fake_servicenow import SEED_SYS_ID

SPECS = SHARED / "contracts" / "specs"
JIRA_SPECS = ("jira-platform-subset.openapi.json", "jsm-request-comment.UNOFFICIAL.openapi.json")
SN_SPECS = (
    "servicenow-table-incident.UNOFFICIAL.openapi.json",  # incident paths first: they carry schemas
    "servicenow-table-api.exported.openapi.json",  # the instance export: any table (sys_journal_field)
)
HOSTILE = "Reset it [~accountid:5b10a2844c20165700ede21g] {html}<b>x</b>{html} !https://x/y.png!"


@cache
def _spec(name: str) -> dict[str, Any]:
    return json.loads((SPECS / name).read_text())


def _operation(specs: tuple[str, ...], method: str, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec, operation) documenting a concrete request path, or fail."""
    for name in specs:
        spec = _spec(name)
        for template, item in spec["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path) and method.lower() in item:
                op = dict(item[method.lower()])
                op["parameters"] = item.get("parameters", []) + op.get("parameters", [])
                return spec, op
    pytest.fail(f"{method} {path} is not in {specs}")


def _validate(spec: dict[str, Any], schema: dict[str, Any], instance: Any, what: str) -> None:
    """Validate against an OpenAPI 3.0 schema, resolving #/components refs in its spec."""
    root = {**schema, "components": spec.get("components", {})}
    errors = list(jsonschema.Draft7Validator(root).iter_errors(instance))
    assert not errors, f"{what}: {[e.message for e in errors][:3]}"


def _check_traffic(fake: FakeServer, specs: tuple[str, ...], *, skip: str | None = None) -> int:
    """Check every recorded request (and answered 2xx body) of a fake against the specs; returns how many."""
    checked = 0
    for req in fake.requests:
        if skip and re.search(skip, req.path):
            continue
        spec, op = _operation(specs, req.method, req.path)
        declared = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
        assert set(req.query) <= declared, f"{req.method} {req.path}: undeclared {set(req.query) - declared}"
        if req.body:
            schema = op["requestBody"]["content"]["application/json"].get("schema", {})
            _validate(spec, schema, req.json(), f"request {req.method} {req.path}")
        answer = op["responses"].get(str(req.status), {}).get("content", {}).get("application/json", {})
        if req.status and 200 <= req.status < 300 and "schema" in answer and req.response is not None:
            _validate(spec, answer["schema"], req.response, f"response {req.method} {req.path}")
        checked += 1
    return checked


@pytest.mark.parametrize("mode", ["servicedeskapi", "property"])
def test_jira_traffic_matches_the_platform_and_jsm_specs(fake_jira: FakeJira, mode: str) -> None:
    w = JiraWriter(JiraSettings(**fake_jira.settings(internal_comments=mode)))
    base = {"external_id": "10231", "external_key": "ITSD-42"}
    w.write(
        WriteBack(
            kind="triage",
            idempotency_key="t",
            fields={"priority": "P2", "queue": "Network", "category": "NETWORK"},
            note=HOSTILE,
            **base,
        )
    )
    w.write(WriteBack(kind="reply", idempotency_key="r", public_reply=HOSTILE, check_existing=True, **base))
    w.write(WriteBack(kind="reply", idempotency_key="r", public_reply=HOSTILE, check_existing=True, **base))
    assert _check_traffic(fake_jira, JIRA_SPECS) >= 5


def test_jira_contract_check_rejects_an_invalid_body(fake_jira: FakeJira) -> None:
    spec, op = _operation(JIRA_SPECS, "POST", "/rest/api/3/issue/1/comment")
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    with pytest.raises(AssertionError):  # the checker itself can fail: EntityProperty forbids extra keys
        _validate(spec, schema, {"body": {}, "properties": [{"key": "k", "value": 1, "bogus": 1}]}, "probe")
    with pytest.raises(pytest.fail.Exception):
        _operation(JIRA_SPECS, "DELETE", "/rest/api/3/issue/1/comment")


@pytest.mark.parametrize("oauth", [False, True])
def test_servicenow_traffic_matches_the_incident_spec(fake_servicenow: FakeServiceNow, oauth: bool) -> None:
    w = ServiceNowWriter(ServiceNowSettings(**fake_servicenow.settings(oauth=oauth)))
    base = {"external_id": SEED_SYS_ID, "external_key": "INC0010042"}
    w.write(
        WriteBack(
            kind="triage", idempotency_key="t", fields={"priority": "P3", "category": "NETWORK"}, note=HOSTILE, **base
        )
    )
    w.write(WriteBack(kind="reply", idempotency_key="r", public_reply=HOSTILE, check_existing=True, **base))
    w.write(WriteBack(kind="reply", idempotency_key="r", public_reply=HOSTILE, check_existing=True, **base))
    # The OAuth token endpoint is not part of the Table API spec (README section 3.4 documents it).
    assert _check_traffic(fake_servicenow, SN_SPECS, skip=r"^/oauth_token\.do$") == 5
