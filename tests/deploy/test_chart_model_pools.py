"""The two model-worker pools: triage (`modelWorker`) and draft (`draftWorker`), each scaled on its own queue, and
the worked example of GPU worker values (examples/values-gpu.yaml)."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART_DIR,
    GPU_EXAMPLE,
    VALUE_SETS,
    component_of,
    containers,
    merge,
    name_of,
    pod_spec,
    render,
    validate_manifest,
)

POOLS = {"modelWorker": "model-worker", "draftWorker": "draft-worker"}
GPU = "nvidia.com/gpu"


def _env(container: dict[str, Any]) -> dict[str, str]:
    """A container's literal env entries."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def _args(rendered: Any, component: str) -> list[str]:
    """The command line of a pool's container."""
    (container,) = containers(rendered.one("Deployment", component))
    args: list[str] = container["args"]
    return args


def _objects_of(rendered: Any, component: str) -> list[str]:
    """kind/name of every object carrying a component label."""
    return [name_of(d) for d in rendered.docs if component_of(d) == component]


def test_draft_pool_runs_the_draft_queue_beside_the_triage_pool() -> None:
    """By default two GPU pools load the model: the triage pool on `triage`, the draft pool on `draft`, each with
    the worker image, its own GPU, one process per GPU, offline Hugging Face and the same settings objects."""
    rendered = render()
    assert _args(rendered, "model-worker") == ["worker", "--queues", "triage"]
    assert _args(rendered, "draft-worker") == ["worker", "--queues", "draft"]
    triage = containers(rendered.one("Deployment", "model-worker"))[0]
    draft = containers(rendered.one("Deployment", "draft-worker"))[0]
    assert draft["image"] == triage["image"] and draft["image"].startswith("itsm-triage-worker:")
    assert draft["envFrom"] == triage["envFrom"]
    assert draft["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", GPU: 1},
        "limits": {"memory": "16Gi", GPU: 1},
    }
    env = _env(draft)
    assert env["ITSM_WORKER__CONCURRENCY"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert "ITSM_MODEL__DEVICE" not in env  # auto: CUDA
    pod = pod_spec(rendered.one("Deployment", "draft-worker"))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert rendered.one("Deployment", "draft-worker")["spec"]["replicas"] == 1
    # Same probes as every worker (the heartbeat of the Celery main process).
    assert draft["livenessProbe"] == triage["livenessProbe"] and draft["startupProbe"] == triage["startupProbe"]


def test_each_pool_takes_its_own_values() -> None:
    """GPUs, resources, scheduling, replicas and annotations of one pool never leak into the other."""
    values = {
        "draftWorker": {
            "replicas": 3,
            "gpu": {
                "count": 2,
                "resourceName": "amd.com/gpu",
                # Helm merges maps: null drops the default key.
                "nodeSelector": {"gpu": "mi300", "nvidia.com/gpu.present": None},
                "tolerations": [],
            },
            "resources": {"requests": {"cpu": "6", "memory": "48Gi"}, "limits": {"memory": "64Gi"}},
            "podAnnotations": {"pool": "draft"},
            "nodeSelector": {"zone": "b"},
            "affinity": {"podAntiAffinity": {}},
        }
    }
    rendered = render(values)
    draft = rendered.one("Deployment", "draft-worker")
    (container,) = containers(draft)
    assert container["resources"] == {
        "requests": {"cpu": "6", "memory": "48Gi", "amd.com/gpu": 2},
        "limits": {"memory": "64Gi", "amd.com/gpu": 2},
    }
    assert _env(container)["ITSM_WORKER__CONCURRENCY"] == "2"
    assert draft["spec"]["replicas"] == 3
    assert pod_spec(draft)["nodeSelector"] == {"zone": "b", "gpu": "mi300"}
    assert pod_spec(draft)["affinity"] == {"podAntiAffinity": {}}
    assert draft["spec"]["template"]["metadata"]["annotations"]["pool"] == "draft"
    # The triage pool is what it was with default values.
    assert rendered.one("Deployment", "model-worker") == render().one("Deployment", "model-worker")
    # And the other way round.
    cpu_triage = render({"modelWorker": {"gpu": {"enabled": False}, "cpuConcurrency": 3}})
    assert cpu_triage.one("Deployment", "draft-worker") == render().one("Deployment", "draft-worker")
    (triage,) = containers(cpu_triage.one("Deployment", "model-worker"))
    assert _env(triage)["ITSM_MODEL__DEVICE"] == "cpu" and _env(triage)["ITSM_WORKER__CONCURRENCY"] == "3"


def test_draft_pool_off_folds_the_draft_queue_into_the_model_workers() -> None:
    """draftWorker.enabled=false: no draft-pool object at all, and the model workers consume both model queues."""
    values = merge(
        VALUE_SETS["everything"],
        {"draftWorker": {"enabled": False, "keda": {"enabled": True}, "hpa": {"enabled": True}}},
    )
    rendered = render(values)  # the switched-off pool's contradictory autoscalers are not rendered, so not refused
    assert _objects_of(rendered, "draft-worker") == []
    assert _args(rendered, "model-worker") == ["worker", "--queues", "triage,draft"]
    (selected,) = rendered.one("PodMonitor")["spec"]["selector"]["matchExpressions"]
    assert "model-worker" in selected["values"]
    assert _args(render({"draftWorker": {"enabled": True}}), "model-worker") == ["worker", "--queues", "triage"]


def test_each_keda_scaled_object_watches_its_own_list() -> None:
    """KEDA in both pools: one ScaledObject per pool, aimed at its own Deployment, on its own Redis list, with its
    own thresholds, replica bounds and TriggerAuthentication."""
    values = merge(
        VALUE_SETS["keda"],
        {"draftWorker": {"keda": {"listLength": 4, "minReplicas": 0, "maxReplicas": 2, "activationListLength": 2}}},
    )
    rendered = render(values)
    # the default activation length 0: KEDA wakes a pool scaled to zero when the list is longer than it
    expected = {"model-worker": ("triage", "32", 1, 8, "0"), "draft-worker": ("draft", "4", 0, 2, "2")}
    for component, (list_name, length, low, high, activation) in expected.items():
        scaled = rendered.one("ScaledObject", component)
        deployment = rendered.one("Deployment", component)
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"], component
        assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (low, high)
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["listName"] == list_name, component
        assert trigger["metadata"]["listLength"] == length
        assert trigger["metadata"]["activationListLength"] == activation
        auth = rendered.one("TriggerAuthentication", component)
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        validate_manifest(scaled)
        validate_manifest(auth)
    assert not rendered.of_kind("HorizontalPodAutoscaler")


def test_one_pool_scales_on_both_lists() -> None:
    """With the draft pool off, the model workers serve both queues, so their ScaledObject has a trigger on each
    list (KEDA follows the larger demand); a renamed list (a Celery key prefix) is followed."""
    rendered = render(
        {
            "draftWorker": {"enabled": False, "keda": {"listName": "itsm.draft"}},
            "modelWorker": {"keda": {"enabled": True, "listName": "itsm.triage"}},
        }
    )
    scaled = rendered.one("ScaledObject", "model-worker")
    assert [t["metadata"]["listName"] for t in scaled["spec"]["triggers"]] == ["itsm.triage", "itsm.draft"]
    assert not rendered.of_kind("TriggerAuthentication")
    assert all("authenticationRef" not in t for t in scaled["spec"]["triggers"])
    validate_manifest(scaled)


def test_pools_pick_their_autoscalers_independently() -> None:
    """KEDA for one pool and an HPA (or fixed replicas) for the other."""
    rendered = render({"modelWorker": {"keda": {"enabled": True}}, "draftWorker": {"hpa": {"enabled": True}}})
    assert [component_of(d) for d in rendered.of_kind("ScaledObject")] == ["model-worker"]
    hpa = rendered.one("HorizontalPodAutoscaler", "draft-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered.one("Deployment", "draft-worker")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    fixed = render({"modelWorker": {"hpa": {"enabled": True}}})
    assert [component_of(d) for d in fixed.of_kind("HorizontalPodAutoscaler")] == ["model-worker"]
    assert fixed.one("Deployment", "draft-worker")["spec"]["replicas"] == 1


def test_draft_pool_network_policy_allows_no_itsm_egress() -> None:
    """The draft pool writes no ITSM note: like the triage pool it reaches only DNS, the database and the broker,
    and accepts only metric scrapes."""
    rendered = render()
    triage = rendered.one("NetworkPolicy", "model-worker")
    draft = rendered.one("NetworkPolicy", "draft-worker")
    assert draft["spec"]["egress"] == triage["spec"]["egress"]
    assert draft["spec"]["ingress"] == triage["spec"]["ingress"]
    assert draft["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "draft-worker"


# ---------------------------------------------------------------- the worked example: examples/values-gpu.yaml


def _example() -> dict[str, Any]:
    """The example values as an operator would pass them with -f."""
    values: dict[str, Any] = yaml.safe_load(GPU_EXAMPLE.read_text())
    return values


def test_gpu_example_gives_both_pools_a_gpu_on_gpu_nodes() -> None:
    """Each pool asks for one GPU (request = limit), runs one process for it, lands on the pinned GPU nodes and
    tolerates their taint; nothing else asks for a GPU."""
    values = _example()
    rendered = render(values)
    for key, component in POOLS.items():
        pool = values[key]
        workload = rendered.one("Deployment", component)
        (container,) = containers(workload)
        resources = container["resources"]
        assert resources["limits"][GPU] == resources["requests"][GPU] == pool["gpu"]["count"] == 1
        assert resources["limits"]["memory"] == pool["resources"]["limits"]["memory"]
        assert _env(container)["ITSM_WORKER__CONCURRENCY"] == "1"
        pod = pod_spec(workload)
        assert pod["nodeSelector"] == pool["gpu"]["nodeSelector"]
        assert pod["tolerations"] == pool["gpu"]["tolerations"]
    for workload in rendered.workloads():
        if component_of(workload) not in POOLS.values():
            assert GPU not in str(workload), name_of(workload)


def test_gpu_example_mounts_the_model_volume_read_only_and_loads_from_it() -> None:
    """Both pools mount the pre-loaded claim read-only (the PVC source and the mount), point the cache there, and
    the configured base and adapter are directories on that volume."""
    values = _example()
    rendered = render(values)
    config = rendered.config_env()
    for key, component in POOLS.items():
        cache = values[key]["modelCache"]
        workload = rendered.one("Deployment", component)
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {
            "claimName": cache["existingClaim"],
            "readOnly": True,
        }
        (container,) = containers(workload)
        assert {"name": "model-cache", "mountPath": cache["mountPath"], "readOnly": True} in container["volumeMounts"]
        assert _env(container)["ITSM_MODEL__CACHE_DIR"] == cache["mountPath"]
        for setting in ("ITSM_MODEL__BASE", "ITSM_MODEL__ADAPTER"):
            assert PurePosixPath(config[setting]).is_relative_to(cache["mountPath"]), setting


def test_gpu_example_env_keeps_the_model_offline_without_hub_kernels() -> None:
    """The settings both pools read say offline, no hub kernels, bfloat16 and static drafting with the example's
    buckets; the pods themselves run with the Hugging Face offline switches."""
    values = _example()
    rendered = render(values)
    config = rendered.config_env()
    model = values["config"]["model"]
    assert config["ITSM_MODEL__OFFLINE"] == "true" and model["offline"] is True
    assert config["ITSM_MODEL__HUB_KERNELS"] == "false" and model["hub_kernels"] is False
    assert config["ITSM_MODEL__DTYPE"] == "bfloat16"
    assert config["ITSM_MODEL__STATIC_DRAFTING"] == "true"
    assert json.loads(config["ITSM_MODEL__DRAFT_BATCH_BUCKETS"]) == model["draft_batch_buckets"]
    assert json.loads(config["ITSM_MODEL__DRAFT_PROMPT_BUCKETS"]) == model["draft_prompt_buckets"]
    # Every drafting batch shape is compiled at start: the batch size is one of the buckets (README, step 2).
    assert model["draft_batch_size"] in model["draft_batch_buckets"]
    configmap = rendered.one("ConfigMap")["metadata"]["name"]
    for component in POOLS.values():
        (container,) = containers(rendered.one("Deployment", component))
        assert {"configMapRef": {"name": configmap}} in container["envFrom"]
        env = _env(container)
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
        assert not {"ITSM_MODEL__OFFLINE", "ITSM_MODEL__HUB_KERNELS"} & set(env)  # nothing overrides the ConfigMap
        startup = container["startupProbe"]
        allowed = startup["periodSeconds"] * startup["failureThreshold"]
        assert allowed == 10 * 180  # the example's 30 minutes for loading and compiling


def test_gpu_example_runs_each_pool_on_its_queue_scaled_by_its_list() -> None:
    """Triage pool on `triage`, draft pool on `draft`, each with a KEDA ScaledObject on that list."""
    rendered = render(_example())
    for component, queue in (("model-worker", "triage"), ("draft-worker", "draft")):
        assert _args(rendered, component) == ["worker", "--queues", queue]
        (trigger,) = rendered.one("ScaledObject", component)["spec"]["triggers"]
        assert trigger["metadata"]["listName"] == queue
        assert trigger["metadata"]["address"] == "redis-master.db.svc:6379"


def test_readme_walks_through_the_gpu_example() -> None:
    """The chart README's worked example names the file and every model setting the file sets, and says plainly
    that it has not been run on a GPU."""
    readme = (CHART_DIR / "README.md").read_text()
    assert "examples/values-gpu.yaml" in readme
    for setting in _example()["config"]["model"]:
        assert f"`config.model.{setting}" in readme, setting
    assert "Not run on a GPU yet" in readme
    # The install command points at the file that exists.
    (command,) = re.findall(r"-f (helm/itsm-triage/examples/\S+)", readme)
    assert (Path(CHART_DIR).parents[1] / command).resolve() == GPU_EXAMPLE.resolve()


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_misspelt_pool_keys_are_refused(pool: str) -> None:
    """Misspelt pool keys fail at install time, naming the key (the schema is strict for both pools)."""
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="gpus"):
        render({pool: {"gpus": {"count": 1}}})
