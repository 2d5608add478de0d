"""The chart lints, renders and validates against the Kubernetes and CRD schemas for every value set."""

from __future__ import annotations

import copy
import json

import helm_python as helm
import pytest

from tests.deploy.chart import (
    CHART_DIR,
    KUBE_VERSIONS,
    VALUE_SETS,
    component_of,
    merge,
    name_of,
    pod_spec,
    render,
    validate_manifest,
)
from tests.deploy.chart_schema import README_PATH, SCHEMA_PATH, readme_regions, readme_tables, settings_sections

SETS = sorted(VALUE_SETS)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", SETS)
def test_chart_lints_clean_in_strict_mode(value_set: str, kube_version: str) -> None:
    """`helm lint --strict` (warnings count as errors) reports nothing."""
    report = helm.lint(CHART_DIR, VALUE_SETS[value_set], strict=True, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", SETS)
def test_every_rendered_manifest_validates(value_set: str, kube_version: str) -> None:
    """Built-in kinds pass kubernetes-validate (strict); KEDA and Prometheus objects pass their CRD schemas."""
    rendered = render(VALUE_SETS[value_set])
    assert rendered.docs
    for doc in rendered.docs:
        validate_manifest(doc, kube_version)


def test_notes_warn_until_a_webhook_secret_is_set() -> None:
    """Install notes tell the operator that the API will refuse to start without a webhook secret."""
    assert "WARNING: no webhook secret" in render().notes
    assert "WARNING" not in render({"secrets": {"jira": {"webhook_secret": "s"}}}).notes


def test_validation_rejects_a_misspelt_field() -> None:
    """The validators are strict: one wrong key in a Deployment or a ScaledObject fails (guards the test above)."""
    deployment = copy.deepcopy(render().one("Deployment", "api"))
    pod_spec(deployment)["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(Exception, match="readOnlyRootFilesytem"):
        validate_manifest(deployment)
    scaled = copy.deepcopy(render(VALUE_SETS["keda"]).one("ScaledObject", "draft-worker"))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(Exception, match="maxReplicas"):
        validate_manifest(scaled)


@pytest.mark.parametrize("value_set", SETS)
def test_objects_are_named_uniquely_and_labelled(value_set: str) -> None:
    """No two objects of a kind share a name, and every object carries the chart's standard labels."""
    rendered = render(VALUE_SETS[value_set])
    names = [name_of(d) for d in rendered.docs]
    assert len(names) == len(set(names)), names
    for doc in rendered.docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "triage", name_of(doc)
        assert labels["app.kubernetes.io/managed-by"] == "Helm", name_of(doc)


def test_default_render_has_every_component() -> None:
    """Default values deploy the API, the model and draft worker pools, delivery workers, the sweeper and the
    migration hook."""
    rendered = render()
    deployments = {component_of(d) for d in rendered.of_kind("Deployment")}
    assert deployments == {"api", "model-worker", "draft-worker", "delivery-worker", "sweeper"}
    assert rendered.one("Job", "migration")
    assert rendered.one("Service", "api")
    assert rendered.one("ServiceAccount")
    assert rendered.one("PodDisruptionBudget", "api")
    assert len(rendered.of_kind("NetworkPolicy")) == 5
    assert not rendered.of_kind("ScaledObject") and not rendered.of_kind("HorizontalPodAutoscaler")


def test_everything_value_set_renders_the_optional_objects() -> None:
    """Ingress, the HPAs, PDBs, the ServiceMonitor and the model cache volume appear when switched on."""
    rendered = render(VALUE_SETS["everything"])
    assert rendered.one("Ingress", "api")["spec"]["ingressClassName"] == "nginx"
    assert {component_of(h) for h in rendered.of_kind("HorizontalPodAutoscaler")} == {
        "api",
        "model-worker",
        "draft-worker",
    }
    assert {component_of(p) for p in rendered.of_kind("PodDisruptionBudget")} == {
        "api",
        "model-worker",
        "draft-worker",
        "delivery-worker",
    }
    assert rendered.one("ServiceMonitor")
    for pool in ("model-worker", "draft-worker"):
        volumes = {v["name"]: v for v in pod_spec(rendered.one("Deployment", pool))["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "models-rox", "readOnly": True}
    # Deployments scaled by an HPA leave the replica count to it.
    for component in ("api", "model-worker", "draft-worker"):
        assert "replicas" not in rendered.one("Deployment", component)["spec"], component


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"secrets": {"database_url": ""}}, "secrets.database_url is required"),
        ({"secrets": {"broker_url": ""}}, "secrets.broker_url is required"),
        ({"config": {"api": {"migrate_on_start": True}}}, "migrate_on_start must stay false"),
        ({"config": {"var_dir": "var"}}, "var_dir must be an absolute path"),
        (
            {"modelWorker": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
            "modelWorker.keda.enabled and modelWorker.hpa.enabled are mutually exclusive",
        ),
        ({"modelWorker": {"modelCache": {"enabled": True}}}, "modelWorker.modelCache.existingClaim"),
        (
            {"draftWorker": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
            "draftWorker.keda.enabled and draftWorker.hpa.enabled are mutually exclusive",
        ),
        ({"draftWorker": {"modelCache": {"enabled": True}}}, "draftWorker.modelCache.existingClaim"),
        ({"draftWorker": {"keda": {"listName": ""}}}, "listName"),
        ({"draftWorker": {"queues": "triage"}}, "queues"),
        ({"config": {"jira": {"base_ur": "https://x"}}}, "base_ur"),
        ({"config": {"model": {"batch_size": 0}}}, "batch_size"),
        ({"config": {"policy": {"priority": {"mode": "always"}}}}, "mode"),
        ({"apiReplicas": 3}, "apiReplicas"),
    ],
)
def test_invalid_values_are_refused(values: dict[str, object], message: str) -> None:
    """Values that would deploy a broken or insecure service fail at render time with a clear message."""
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_existing_secret_makes_database_url_optional() -> None:
    """With an existingSecret the URLs come from it, so empty chart values are fine."""
    rendered = render(merge(VALUE_SETS["existing-secret"], {"secrets": {"database_url": "", "broker_url": ""}}))
    assert not rendered.of_kind("Secret")


def test_values_schema_mirrors_settings() -> None:
    """values.schema.json's config/secrets sections are exactly what Settings generates.

    After changing Settings run `python -m tests.deploy.chart_schema` (schema + README tables) and add the key to
    values.yaml.
    """
    committed = json.loads(SCHEMA_PATH.read_text())["properties"]
    generated = settings_sections()
    assert committed["config"] == generated["config"]
    assert committed["secrets"] == generated["secrets"]


def test_readme_settings_tables_mirror_settings() -> None:
    """The README's config/secrets tables are generated from Settings (descriptions and defaults included)."""
    assert readme_regions(README_PATH.read_text()) == readme_tables()


def test_default_values_pass_the_schema() -> None:
    """The shipped values.yaml itself satisfies values.schema.json."""
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.values)
