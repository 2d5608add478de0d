"""Render the Helm chart with the real Helm engine (helm-python-sdk, no helm binary) and index the manifests."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "itsm-triage"
CRD_SCHEMAS = Path(__file__).resolve().parent / "crds"
# The worked example of GPU worker values the chart README documents.
GPU_EXAMPLE = CHART_DIR / "examples" / "values-gpu.yaml"
RELEASE = "triage"
NAMESPACE = "itsm"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")

_KEDA_REDIS = {"address": "redis-master.data:6379", "passwordSecret": {"name": "redis", "key": "pw"}}

# The value sets every structural test runs against (the issue asks for default + GPU off + KEDA on + existing
# secret; "everything" switches on each optional object so that it is validated too, the retrain pool included;
# "one-pool" folds the draft queue into the model workers; "gpu-example" is examples/values-gpu.yaml).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "gpu-off": {
        "modelWorker": {"gpu": {"enabled": False}},
        "draftWorker": {"gpu": {"enabled": False}},
        "learnWorker": {"enabled": True, "gpu": {"enabled": False}},
    },
    "keda": {
        "modelWorker": {"keda": {"enabled": True, "redis": _KEDA_REDIS}},
        "draftWorker": {"keda": {"enabled": True, "redis": _KEDA_REDIS}},
        "learnWorker": {"enabled": True, "keda": {"enabled": True, "redis": _KEDA_REDIS}},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        },
    },
    "existing-secret": {"existingSecret": "itsm-credentials"},
    "everything": {
        "api": {
            "autoscaling": {"enabled": True},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "tls": [{"secretName": "triage-tls", "hosts": ["triage.example.com"]}],
            },
        },
        "modelWorker": {
            "hpa": {"enabled": True},
            "modelCache": {"enabled": True, "existingClaim": "models-rox"},
            "podDisruptionBudget": {"enabled": True},
        },
        "draftWorker": {
            "hpa": {"enabled": True},
            "modelCache": {"enabled": True, "existingClaim": "models-rox"},
            "podDisruptionBudget": {"enabled": True},
        },
        "learnWorker": {"modelCache": {"enabled": True, "existingClaim": "models-rox"}},
        "deliveryWorker": {"podDisruptionBudget": {"enabled": True}},
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        "networkPolicy": {
            "database": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
            "broker": {"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}]},
            "apiIngressFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
        },
        "config": {
            "policy": {"priority": {"mode": "auto", "threshold": 0.95}},
            "jira": {"base_url": "https://acme.atlassian.net", "email": "bot@acme.test"},
            "servicenow": {"instance_url": "https://acme.service-now.com", "username": "triage.bot"},
            # Weekly retrains: the retrain pool (learnWorker.enabled null) follows the schedule.
            "learning": {"schedule": "0 3 * * 6"},
        },
    },
    "one-pool": {"draftWorker": {"enabled": False}, "modelWorker": {"keda": {"enabled": True}}},
    "gpu-example": yaml.safe_load(GPU_EXAMPLE.read_text()),
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two values trees (override wins), as `helm -f a -f b` would."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Rendered:
    """The manifests of one render, parsed, with lookups by kind and component."""

    docs: tuple[dict[str, Any], ...]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every manifest of one kind."""
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        """The single manifest of `kind` (and component label); fails when there is not exactly one."""
        found = [d for d in self.of_kind(kind) if component is None or component_of(d) == component]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {[name_of(d) for d in found]}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        """Every object that runs pods."""
        return [d for d in self.docs if d["kind"] in WORKLOAD_KINDS]

    def config_env(self) -> dict[str, str]:
        """The ConfigMap's variables."""
        return dict(self.one("ConfigMap").get("data") or {})

    def secret_env(self) -> dict[str, str]:
        """The release Secret's variables, decoded (empty when an existing Secret is used)."""
        secrets = [d for d in self.of_kind("Secret") if "helm.sh/hook" not in annotations_of(d)]
        return {k: base64.b64decode(v).decode() for s in secrets for k, v in (s.get("data") or {}).items()}


def name_of(doc: dict[str, Any]) -> str:
    """kind/name of a manifest, for messages."""
    return f"{doc['kind']}/{doc['metadata']['name']}"


def component_of(doc: dict[str, Any]) -> str | None:
    """The app.kubernetes.io/component label."""
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def annotations_of(doc: dict[str, Any]) -> dict[str, str]:
    """metadata.annotations (empty when absent)."""
    return doc["metadata"].get("annotations") or {}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment / Job / CronJob."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """Init and regular containers of a workload."""
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def iter_env_names(container: dict[str, Any]) -> Iterator[str]:
    """Names of the explicit env entries of a container."""
    for entry in container.get("env") or []:
        yield entry["name"]


@cache
def _render_json(values_json: str) -> Rendered:
    """Render once per distinct values document (renders are pure, so tests share them)."""
    values = json.loads(values_json)
    with helm.Chart.load(CHART_DIR) as chart:
        out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(docs=tuple(docs), notes=notes)


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Render the chart as `helm template` would at install time."""
    return _render_json(json.dumps(values or {}, sort_keys=True))


def validate_manifest(doc: dict[str, Any], kube_version: str = KUBE_VERSIONS[-1]) -> None:
    """Validate one manifest: built-in kinds with kubernetes-validate (strict), custom resources with the
    hand-written CRD schemas in tests/deploy/crds/."""
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    if "." in group and not group.endswith(".k8s.io"):
        schema_file = CRD_SCHEMAS / f"{doc['apiVersion'].replace('/', '_')}_{doc['kind']}.json"
        assert schema_file.exists(), f"no vendored schema for custom resource {doc['apiVersion']} {doc['kind']}"
        jsonschema.Draft202012Validator(json.loads(schema_file.read_text())).validate(doc)
        return
    kubernetes_validate.validate(doc, kube_version, strict=True)
