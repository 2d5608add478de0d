"""The retrain pool (`learnWorker`): `worker --queues learn`, one process on one GPU, run when a retrain schedule
(config.learning.schedule) is set or learnWorker.enabled says so, optionally scaled from zero by KEDA."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import helm_python as helm
import pytest
from celery import Celery

from service.queue import LEARN_QUEUE, RETRAIN_TASK
from tests.deploy.chart import (
    CHART_DIR,
    VALUE_SETS,
    component_of,
    containers,
    merge,
    name_of,
    pod_spec,
    render,
    validate_manifest,
)
from workers.learning import register_learning_tasks

POOL = "learn-worker"
GPU = "nvidia.com/gpu"
GPU_PRESENT = "nvidia.com/gpu.present"
SCHEDULE = {"config": {"learning": {"schedule": "0 3 * * 6"}}}
_KEDA = {"enabled": True, "redis": {"address": "redis-master.data:6379", "passwordSecret": {"name": "r", "key": "pw"}}}


def _env(container: dict[str, Any]) -> dict[str, str]:
    """A container's literal env entries."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def _pool_objects(rendered: Any) -> list[str]:
    """kind/name of every object of the retrain pool."""
    return [name_of(d) for d in rendered.docs if component_of(d) == POOL]


def _retrain_time_limit(time_budget_min: float) -> int:
    """The hard time limit the worker registers for the retrain task (workers/learning.py)."""
    app = Celery("limit-probe")
    runtime = SimpleNamespace(settings=SimpleNamespace(learning=SimpleNamespace(time_budget_min=time_budget_min)))
    register_learning_tasks(app, runtime)  # type: ignore[arg-type]
    limit: int = app.tasks[RETRAIN_TASK].time_limit
    return limit


def test_no_schedule_no_retrain_pool() -> None:
    """By default (no schedule, learnWorker.enabled null) nothing of the pool is rendered: no Deployment, policy,
    autoscaler or PodMonitor entry, even with KEDA and the monitors switched on."""
    rendered = render(
        {"learnWorker": {"keda": _KEDA}, "metrics": {"podMonitor": {"enabled": True}}},
    )
    assert _pool_objects(rendered) == []
    assert _pool_objects(render()) == []
    (selected,) = rendered.one("PodMonitor")["spec"]["selector"]["matchExpressions"]
    assert POOL not in selected["values"]
    assert "ITSM_LEARNING__SCHEDULE" not in rendered.config_env()


def test_a_schedule_brings_its_consumer() -> None:
    """A schedule alone runs the pool: the worker image on the `learn` queue, one process, one GPU on a GPU node,
    the same settings objects as the model pools, and the schedule in the ConfigMap for the sweeper's beat."""
    rendered = render(SCHEDULE)
    deployment = rendered.one("Deployment", POOL)
    (container,) = containers(deployment)
    assert container["args"] == ["worker", "--queues", LEARN_QUEUE]
    (triage,) = containers(rendered.one("Deployment", "model-worker"))
    assert container["image"] == triage["image"] and container["image"].startswith("itsm-triage-worker:")
    assert container["envFrom"] == triage["envFrom"]
    assert container["livenessProbe"] == triage["livenessProbe"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", GPU: 1},
        "limits": {"memory": "16Gi", GPU: 1},
    }
    env = _env(container)
    assert env["ITSM_WORKER__CONCURRENCY"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1" and "ITSM_MODEL__DEVICE" not in env
    pod = pod_spec(deployment)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert deployment["spec"]["replicas"] == 1
    assert rendered.config_env()["ITSM_LEARNING__SCHEDULE"] == "0 3 * * 6"
    # The beat stays in the sweeper: the pool only consumes.
    beats = [component_of(d) for d in rendered.workloads() if "--beat" in containers(d)[0]["args"]]
    assert beats == ["sweeper"]
    # Like the model pools: DNS, database and broker only; metric scrapes in.
    policy = rendered.one("NetworkPolicy", POOL)
    triage_policy = rendered.one("NetworkPolicy", "model-worker")
    assert policy["spec"]["egress"] == triage_policy["spec"]["egress"]
    assert policy["spec"]["ingress"] == triage_policy["spec"]["ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == POOL
    monitored = render(merge(SCHEDULE, {"metrics": {"podMonitor": {"enabled": True}}})).one("PodMonitor")
    assert POOL in monitored["spec"]["selector"]["matchExpressions"][0]["values"]
    for doc in rendered.docs:
        validate_manifest(doc)


@pytest.mark.parametrize(
    ("values", "runs"),
    [
        ({}, False),
        (SCHEDULE, True),
        ({"learnWorker": {"enabled": True}}, True),  # no schedule: a GPU pod for `itsm-triage retrain`
        ({"learnWorker": {"enabled": False}}, False),
        (merge(SCHEDULE, {"learnWorker": {"enabled": True}}), True),
        # An explicit null (Helm drops the key) follows the schedule like the default.
        (merge(SCHEDULE, {"learnWorker": {"enabled": None}}), True),
        ({"learnWorker": {"enabled": None}}, False),
        ({"config": {"learning": {"schedule": ""}}}, False),  # empty: unset
    ],
)
def test_which_values_run_the_pool(values: dict[str, Any], runs: bool) -> None:
    """learnWorker.enabled true/false decides; null (the default) follows config.learning.schedule."""
    rendered = render(values)
    assert bool(_pool_objects(rendered)) is runs
    if runs:
        assert [d["kind"] for d in rendered.docs if component_of(d) == POOL] == ["Deployment", "NetworkPolicy"]


def test_one_process_whatever_the_gpus() -> None:
    """More GPUs make a bigger pod, never a second retrain process; without GPUs the retrain runs on the CPU."""
    (two,) = containers(render({"learnWorker": {"enabled": True, "gpu": {"count": 2}}}).one("Deployment", POOL))
    assert two["resources"]["limits"][GPU] == two["resources"]["requests"][GPU] == 2
    assert _env(two)["ITSM_WORKER__CONCURRENCY"] == "1"
    cpu = render(VALUE_SETS["gpu-off"]).one("Deployment", POOL)
    (container,) = containers(cpu)
    assert _env(container)["ITSM_MODEL__DEVICE"] == "cpu"
    assert _env(container)["ITSM_WORKER__CONCURRENCY"] == "1"
    assert GPU not in str(cpu)
    assert "nodeSelector" not in pod_spec(cpu)


def test_pool_takes_its_own_values_and_leaves_the_others_alone() -> None:
    """Scheduling, resources, annotations and the model volume of the retrain pool stay in it."""
    values = merge(
        SCHEDULE,
        {
            "learnWorker": {
                # Helm merges maps: null drops the default key.
                "gpu": {"resourceName": "amd.com/gpu", "nodeSelector": {"gpu": "mi300", GPU_PRESENT: None}},
                "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "96Gi"}},
                "podAnnotations": {"pool": "learn"},
                "nodeSelector": {"zone": "c"},
                "affinity": {"podAntiAffinity": {}},
                "modelCache": {"enabled": True, "existingClaim": "models-rox", "mountPath": "/weights"},
            }
        },
    )
    rendered = render(values)
    deployment = rendered.one("Deployment", POOL)
    (container,) = containers(deployment)
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", "amd.com/gpu": 1},
        "limits": {"memory": "96Gi", "amd.com/gpu": 1},
    }
    pod = pod_spec(deployment)
    assert pod["nodeSelector"] == {"zone": "c", "gpu": "mi300"}
    assert pod["affinity"] == {"podAntiAffinity": {}}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["pool"] == "learn"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "models-rox", "readOnly": True}
    assert {"name": "model-cache", "mountPath": "/weights", "readOnly": True} in container["volumeMounts"]
    assert _env(container)["ITSM_MODEL__CACHE_DIR"] == "/weights"
    for component in ("model-worker", "draft-worker"):
        assert rendered.one("Deployment", component) == render(SCHEDULE).one("Deployment", component), component


def test_keda_scales_the_pool_from_zero() -> None:
    """KEDA on: a ScaledObject on the pool's Deployment, on the `learn` list, between 0 and 1 replica, woken by one
    queued retrain, kept long enough for a retrain to finish; the Deployment leaves its replicas to KEDA."""
    rendered = render(merge(SCHEDULE, {"learnWorker": {"keda": _KEDA}}))
    scaled = rendered.one("ScaledObject", POOL)
    deployment = rendered.one("Deployment", POOL)
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 1)
    assert scaled["spec"]["cooldownPeriod"] >= _retrain_time_limit(30.0)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["listName"] == LEARN_QUEUE
    # KEDA activates when the list is LONGER than this: 0, so that a single queued retrain wakes the pool.
    assert trigger["metadata"]["activationListLength"] == "0"
    assert trigger["metadata"]["listLength"] == "1"
    auth = rendered.one("TriggerAuthentication", POOL)
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    validate_manifest(scaled)
    validate_manifest(auth)
    # The model pools' autoscalers are their own business.
    assert {component_of(d) for d in rendered.of_kind("ScaledObject")} == {POOL}
    assert not rendered.of_kind("HorizontalPodAutoscaler")


@pytest.mark.parametrize("time_budget_min", [30.0, 45.5, 120])
def test_keda_cooldown_must_outlast_the_retrain_time_limit(time_budget_min: float) -> None:
    """The worker takes the retrain off the list as it starts, so KEDA sees an empty queue while it runs: a
    cooldown shorter than the retrain task's hard time limit (as the worker registers it) would scale the pool
    to zero mid-retrain, and is refused. With minReplicas 1 nothing scales to zero, so any cooldown will do."""
    limit = _retrain_time_limit(time_budget_min)

    def values(cooldown: int, low: int = 0) -> dict[str, Any]:
        """Schedule, time budget and the pool's KEDA bounds."""
        return merge(
            SCHEDULE,
            {
                "config": {"learning": {"time_budget_min": time_budget_min}},
                "learnWorker": {"keda": {**_KEDA, "cooldownPeriod": cooldown, "minReplicas": low}},
            },
        )

    assert render(values(limit)).one("ScaledObject", POOL)["spec"]["cooldownPeriod"] == limit
    with pytest.raises(helm.HelmError, match=rf"cooldownPeriod \({limit - 1} s\) must be at least {limit} s"):
        render(values(limit - 1))
    assert render(values(60, low=1)).one("ScaledObject", POOL)["spec"]["minReplicaCount"] == 1


def test_default_cooldown_covers_the_default_retrain() -> None:
    """values.yaml's cooldown is enough for the service's default time budget (so enabling KEDA just works)."""
    with helm.Chart.load(CHART_DIR) as chart:
        defaults = chart.values
    budget = defaults["config"]["learning"]["time_budget_min"]
    assert defaults["learnWorker"]["keda"]["cooldownPeriod"] >= _retrain_time_limit(budget)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            merge(SCHEDULE, {"learnWorker": {"enabled": False}}),
            "learnWorker.enabled is false: nothing would consume the `learn` queue",
        ),
        (merge(SCHEDULE, {"sweeper": {"enabled": False}}), "config.learning.schedule needs sweeper.enabled"),
        ({"config": {"learning": {"schedule": "0 3 * *"}}}, "is not a crontab: five fields"),
        ({"config": {"learning": {"schedule": "weekly"}}}, "is not a crontab"),
        ({"learnWorker": {"enabled": True, "modelCache": {"enabled": True}}}, "learnWorker.modelCache.existingClaim"),
        # The pool has neither a CPU HPA nor a PodDisruptionBudget, nor more than one replica.
        ({"learnWorker": {"hpa": {"enabled": True}}}, "hpa"),
        ({"learnWorker": {"podDisruptionBudget": {"enabled": True}}}, "podDisruptionBudget"),
        ({"learnWorker": {"cpuConcurrency": 2}}, "cpuConcurrency"),
        ({"learnWorker": {"replicas": 2}}, "replicas"),
        ({"learnWorker": {"keda": {"maxReplicas": 2}}}, "maxReplicas"),
        ({"learnWorker": {"enabled": "auto"}}, "enabled"),
    ],
)
def test_contradictory_values_are_refused(values: dict[str, Any], message: str) -> None:
    """A schedule nobody consumes or enqueues, a malformed crontab, and keys this pool does not have fail at
    install time with a message that names the problem."""
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_enabled_without_schedule_is_allowed_and_idle() -> None:
    """learnWorker.enabled without a schedule is fine (an admin runs `itsm-triage retrain` in the pod): the pool
    runs, and nothing schedules retrains (no schedule in the ConfigMap)."""
    rendered = render({"learnWorker": {"enabled": True}})
    assert rendered.one("Deployment", POOL)
    assert "ITSM_LEARNING__SCHEDULE" not in rendered.config_env()


def test_readme_explains_the_learning_loop() -> None:
    """The chart README's section names where retrains run, who schedules them and how adapters travel."""
    readme = (CHART_DIR / "README.md").read_text()
    assert "## The learning loop on Kubernetes" in readme
    section = readme.split("## The learning loop on Kubernetes", 1)[1].split("\n## ", 1)[0]
    for key in (
        "learnWorker",
        "config.learning.schedule",
        "config.learning.check_interval_s",
        "config.learning.store_dir",
        "config.learning.cache_dir",
        "config.learning.adapter_sync_s",
        "learnWorker.keda.cooldownPeriod",
    ):
        assert f"`{key}`" in section, key
    assert "sweeper" in section and "--queues learn" in section
