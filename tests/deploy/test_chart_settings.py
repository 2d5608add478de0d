"""values.yaml maps one-to-one to Settings, and what the chart renders rebuilds exactly those Settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr, TypeAdapter

from service.settings import Settings
from tests.deploy.chart import CHART_DIR, VALUE_SETS, containers, name_of, render
from tests.deploy.settings_walk import CHART_OVERRIDES, Leaf, group_model, leaves

VALUES_YAML = CHART_DIR / "values.yaml"


def raw_values() -> dict[str, Any]:
    """values.yaml as written (nulls kept), not as Helm merges it."""
    loaded: dict[str, Any] = yaml.safe_load(VALUES_YAML.read_text())
    return loaded


def _values_paths(tree: dict[str, Any], model: type[BaseModel], prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Leaf paths of a config/secrets subtree, descending only where Settings has a nested group."""
    paths: set[tuple[str, ...]] = set()
    for key, value in tree.items():
        field = model.model_fields.get(key)
        group = group_model(field.annotation) if field is not None else None
        if group is not None and isinstance(value, dict):
            paths |= _values_paths(value, group, (*prefix, key))
        else:
            paths.add((*prefix, key))
    return paths


def _json_default(leaf: Leaf) -> Any:
    """A leaf's default as values.yaml spells it (JSON-compatible)."""
    return TypeAdapter(leaf.annotation).dump_python(leaf.default, mode="json")


def _sample(leaf: Leaf) -> Any:
    """A non-null value for a leaf: its default when it has one, else the first candidate its type accepts."""
    if leaf.secret:
        return f"sentinel-{leaf.env.lower().replace('_', '-')}"
    default = _json_default(leaf) if leaf.default is not None else None
    if default not in (None, {}, [], ""):
        return default
    # Unset optionals and empty maps get content, which proves they travel intact.
    candidates: tuple[Any, ...] = (
        f"https://sample.example/{leaf.path[-1]}",
        7,
        True,
        {"sample-key": "sample-value"},
        {"sample-key": {"mode": "auto", "threshold": 0.5}},
        {"sample-key": {}},
        ["sample"],
    )
    for candidate in candidates:
        if _accepts(leaf, candidate):
            return candidate
    raise AssertionError(f"no sample value for {leaf.env} ({leaf.annotation})")


def _accepts(leaf: Leaf, value: Any) -> bool:
    """Whether the leaf's type validates `value`."""
    try:
        TypeAdapter(leaf.annotation).validate_python(value)
    except ValueError:
        return False
    return True


def _all_set_values() -> dict[str, Any]:
    """Values that set every Settings leaf to something non-null."""
    values: dict[str, Any] = {"config": {}, "secrets": {}}
    for leaf in leaves():
        node = values
        *parents, last = leaf.values_path
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _sample(leaf)
    # The two settings the chart constrains for a container (the tests above check they still map one-to-one).
    values["config"]["api"]["migrate_on_start"] = False
    values["config"]["var_dir"] = "/srv/itsm-sample"
    # A crontab, which the chart and Settings both check (a URL is a str but no schedule).
    values["config"]["learning"]["schedule"] = "0 3 * * 6"
    return values


def test_values_keys_map_one_to_one_to_settings() -> None:
    """Every Settings field has exactly one values key (config.* or secrets.*) and every such key is a field.

    A new Settings field fails here until it is added to values.yaml (and README, values.schema.json).
    """
    values = raw_values()
    expected_config = {leaf.path for leaf in leaves() if not leaf.secret}
    expected_secrets = {leaf.path for leaf in leaves() if leaf.secret}
    actual_config = _values_paths(values["config"], Settings, ())
    actual_secrets = _values_paths(values["secrets"], Settings, ())
    assert sorted(expected_config - actual_config) == [], "Settings fields missing from config in values.yaml"
    assert sorted(actual_config - expected_config) == [], "config keys in values.yaml that are no Settings field"
    assert sorted(expected_secrets - actual_secrets) == [], "secret fields missing from secrets in values.yaml"
    assert sorted(actual_secrets - expected_secrets) == [], "secrets keys in values.yaml that are no Settings field"


def test_chart_defaults_equal_settings_defaults_except_documented_overrides() -> None:
    """The chart does not silently change a service default; its few deliberate changes are listed."""
    values = raw_values()["config"]
    drift = {}
    for leaf in leaves():
        if leaf.secret:
            continue
        node: Any = values
        for part in leaf.path:
            node = node[part]
        want = CHART_OVERRIDES.get(leaf.path, _json_default(leaf))
        if node != want:
            drift[leaf.env] = (node, want)
    assert drift == {}, "values.yaml default -> Settings default"
    assert all("[chart override]" in _comment_above(path[-1]) for path in CHART_OVERRIDES)


def _comment_above(key: str) -> str:
    """The comment line right above the first `key:` line of values.yaml's config section."""
    lines = VALUES_YAML.read_text().splitlines()
    start = lines.index("config:")
    for i in range(start, len(lines)):
        if lines[i].strip().startswith(f"{key}:"):
            return lines[i - 1]
    return ""


def test_every_setting_reaches_its_env_var_through_the_right_object() -> None:
    """Each plain field lands in the ConfigMap, each credential in the Secret, and never the other way."""
    rendered = render(_all_set_values())
    config_env, secret_env = rendered.config_env(), rendered.secret_env()
    for leaf in leaves():
        home, other = (secret_env, config_env) if leaf.secret else (config_env, secret_env)
        assert leaf.env in home, f"{leaf.env} ({'.'.join(leaf.values_path)}) is not rendered"
        assert leaf.env not in other, f"{leaf.env} rendered into the wrong object"


def test_rendered_env_rebuilds_the_settings_the_values_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings parses every rendered variable (numbers, booleans, JSON maps) back to the values."""
    values = _all_set_values()
    rendered = render(values)
    for name in [n for n in os.environ if n.startswith("ITSM_")]:
        monkeypatch.delenv(name)
    for name, value in {**rendered.config_env(), **rendered.secret_env()}.items():
        monkeypatch.setenv(name, value)
    built = Settings(_env_file=None)  # type: ignore[call-arg]
    for leaf in leaves():
        got: Any = built
        for part in leaf.path:
            got = getattr(got, part)
        want: Any = values
        for part in leaf.values_path:
            want = want[part]
        if isinstance(got, SecretStr):
            assert got.get_secret_value() == want, leaf.env
            continue
        adapter = TypeAdapter(leaf.annotation)
        assert adapter.dump_python(got, mode="json") == adapter.dump_python(
            adapter.validate_python(want), mode="json"
        ), leaf.env


def test_chart_settings_of_note() -> None:
    """The defaults that make a cluster install work: no migrate race, model baked in, writable var_dir."""
    env = render().config_env()
    assert env["ITSM_API__MIGRATE_ON_START"] == "false"
    assert env["ITSM_MODEL__CACHE_DIR"] == "/opt/itsm-triage/models"
    assert Path(env["ITSM_VAR_DIR"]).is_absolute()
    secrets = render().secret_env()
    assert secrets["ITSM_DATABASE_URL"].startswith("postgresql")
    assert secrets["ITSM_BROKER_URL"].startswith("redis://")


def test_no_secret_value_appears_outside_secrets() -> None:
    """Credentials only ever travel in Secrets: not in ConfigMaps, pod specs, annotations or NOTES."""
    values = _all_set_values()
    sentinels = [_sample(leaf) for leaf in leaves() if leaf.secret and "sentinel" in str(_sample(leaf))]
    assert sentinels
    rendered = render(values)
    for doc in rendered.docs:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        leaked = [s for s in sentinels if s in text]
        assert not leaked, f"{name_of(doc)} contains {leaked}"
    assert not [s for s in sentinels if s in rendered.notes]
    secret_envs = {leaf.env for leaf in leaves() if leaf.secret}
    for config_map in rendered.of_kind("ConfigMap"):
        assert not secret_envs & set(config_map.get("data") or {}), name_of(config_map)
    for workload in rendered.workloads():
        for container in containers(workload):
            for entry in container.get("env") or []:
                assert entry["name"] not in secret_envs or "valueFrom" in entry, (name_of(workload), entry)


def test_secret_holds_only_credentials() -> None:
    """The chart's Secret has only ITSM_* credential keys (the same names an existingSecret must use)."""
    secret_envs = {leaf.env for leaf in leaves() if leaf.secret}
    for value_set in ("default", "everything"):
        keys = set(render(VALUE_SETS[value_set]).secret_env())
        assert keys <= secret_envs, keys - secret_envs
        assert {"ITSM_DATABASE_URL", "ITSM_BROKER_URL", "ITSM_REVIEW__SESSION_SECRET"} <= keys


def test_session_secret_is_generated_when_not_given() -> None:
    """Replicas must share one cookie-signing key, so the chart makes one instead of each pod inventing its own."""
    generated = render().secret_env()["ITSM_REVIEW__SESSION_SECRET"]
    assert len(generated) == 48 and generated.isalnum()
    given = render({"secrets": {"review": {"session_secret": "operator-chosen"}}}).secret_env()
    assert given["ITSM_REVIEW__SESSION_SECRET"] == "operator-chosen"


def test_existing_secret_replaces_the_chart_secret_everywhere() -> None:
    """With existingSecret no Secret is rendered and every pod, the migration Job too, reads the named one."""
    rendered = render(VALUE_SETS["existing-secret"])
    assert not rendered.of_kind("Secret")
    assert rendered.workloads()
    for workload in rendered.workloads():
        for container in containers(workload):
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert refs == ["itsm-credentials"], (name_of(workload), refs)
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        assert "checksum/secret" not in annotations
