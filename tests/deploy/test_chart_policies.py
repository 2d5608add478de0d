"""Security, scheduling, health and networking policies every render of the chart must meet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import (
    CHART_DIR,
    VALUE_SETS,
    annotations_of,
    component_of,
    containers,
    merge,
    name_of,
    pod_spec,
    render,
)
from tests.deploy.settings_walk import leaves

SETS = sorted(VALUE_SETS)
WORKERS = ("model-worker", "draft-worker", "delivery-worker", "sweeper")
# The two model pools (triage and draft): the only workloads with the model, GPUs and the worker image...
MODEL_POOLS = ("model-worker", "draft-worker")
# ...besides the retrain pool, which runs only with learnWorker.enabled or config.learning.schedule.
LEARN_POOL = "learn-worker"
GPU = "nvidia.com/gpu"


def _volumes(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod volumes by name."""
    return {v["name"]: v for v in pod_spec(workload).get("volumes", [])}


def _env(container: dict[str, Any]) -> dict[str, str]:
    """A container's literal env entries."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


@pytest.mark.parametrize("value_set", SETS)
def test_every_pod_runs_restricted_and_never_as_root(value_set: str) -> None:
    """Pod Security 'restricted': non-root uid, seccomp, no escalation, read-only root, ALL capabilities dropped."""
    rendered = render(VALUE_SETS[value_set])
    for workload in rendered.workloads():
        pod = pod_spec(workload)
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name_of(workload)
        assert pod_sc["runAsUser"] > 0 and pod_sc["runAsGroup"] > 0, name_of(workload)
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name_of(workload)
        assert pod["automountServiceAccountToken"] is False, name_of(workload)
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for container in containers(workload):
            sc = container["securityContext"]
            where = f"{name_of(workload)}/{container['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged") is not True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
        for volume in _volumes(workload).values():
            assert "hostPath" not in volume, name_of(workload)


@pytest.mark.parametrize("value_set", SETS)
def test_writable_paths_are_emptydirs(value_set: str) -> None:
    """With a read-only root, /tmp, var_dir (the working directory) and the caches sit on emptyDir volumes."""
    rendered = render(VALUE_SETS[value_set])
    var_dir = rendered.config_env()["ITSM_VAR_DIR"]
    for workload in rendered.workloads():
        volumes = _volumes(workload)
        for container in containers(workload):
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            where = f"{name_of(workload)}/{container['name']}"
            for path in ("/tmp", var_dir):
                assert path in mounts, f"{where}: {path} not mounted"
                volume = volumes[mounts[path]["name"]]
                assert "emptyDir" in volume and volume["emptyDir"].get("sizeLimit"), f"{where}: {path}"
                assert not mounts[path].get("readOnly"), where
            writable = [p for p, m in mounts.items() if "emptyDir" in volumes[m["name"]]]
            env = _env(container)
            for needs_write in [container.get("workingDir"), env.get("HOME"), env.get("HF_HOME")]:
                if needs_write:
                    assert any(Path(needs_write).is_relative_to(p) for p in writable), f"{where}: {needs_write}"


def test_model_workers_request_gpus_by_default() -> None:
    """Model workers ask for nvidia.com/gpu, land on GPU nodes, tolerate the GPU taint, one process per GPU."""
    rendered = render()
    worker = rendered.one("Deployment", "model-worker")
    (container,) = containers(worker)
    assert container["resources"]["limits"][GPU] == 1
    assert container["resources"]["requests"][GPU] == 1
    pod = pod_spec(worker)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert _env(container)["ITSM_WORKER__CONCURRENCY"] == "1"
    assert container["image"].startswith("itsm-triage-worker:")
    two = containers(render({"modelWorker": {"gpu": {"count": 2}}}).one("Deployment", "model-worker"))[0]
    assert two["resources"]["limits"][GPU] == 2
    assert _env(two)["ITSM_WORKER__CONCURRENCY"] == "2"


@pytest.mark.parametrize("value_set", ["default", "everything"])
def test_only_model_workers_touch_gpus(value_set: str) -> None:
    """No workload but the model pools (and the retrain pool) requests a GPU or schedules onto GPU nodes."""
    for workload in render(VALUE_SETS[value_set]).workloads():
        if component_of(workload) in (*MODEL_POOLS, LEARN_POOL):
            continue
        assert GPU not in str(workload), name_of(workload)


def test_gpu_off_runs_model_workers_on_cpu() -> None:
    """gpu.enabled=false: no GPU resource, selector or toleration anywhere, and the model runs on the CPU."""
    rendered = render(VALUE_SETS["gpu-off"])
    assert GPU not in str(rendered.docs)
    for component in MODEL_POOLS:
        (container,) = containers(rendered.one("Deployment", component))
        assert _env(container)["ITSM_MODEL__DEVICE"] == "cpu", component
        assert _env(container)["ITSM_WORKER__CONCURRENCY"] == "1", component


def test_model_workers_stay_offline() -> None:
    """The model is baked into the image or a pre-loaded volume: Hugging Face libraries run offline."""
    for value_set in ("default", "everything"):
        for component in MODEL_POOLS:
            (container,) = containers(render(VALUE_SETS[value_set]).one("Deployment", component))
            env = _env(container)
            assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    for component in MODEL_POOLS:
        cached = containers(render(VALUE_SETS["everything"]).one("Deployment", component))[0]
        assert _env(cached)["ITSM_MODEL__CACHE_DIR"] == "/models"
        assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in cached["volumeMounts"]


def test_commands_match_the_cli() -> None:
    """Each component runs the documented `itsm-triage` command line (the images' entrypoint)."""
    rendered = render()
    args = {component_of(d): containers(d)[0]["args"] for d in rendered.workloads()}
    assert args == {
        "api": ["serve", "--host", "0.0.0.0", "--port", "8000"],
        "model-worker": ["worker", "--queues", "triage"],
        "draft-worker": ["worker", "--queues", "draft"],
        "delivery-worker": ["worker", "--queues", "deliver"],
        "sweeper": ["worker", "--queues", "deliver", "--beat"],
        "migration": ["db", "upgrade"],
    }


@pytest.mark.parametrize("value_set", ["default", "one-pool", "everything"])
def test_cli_accepts_the_chart_command_lines(value_set: str) -> None:
    """The commands the chart runs parse with the real click CLI (options only; nothing is started), and every
    queue they name is one the CLI accepts (`worker` checks its --queues against service.queue.QUEUES)."""
    import click

    from service.cli import main

    def resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
        """The subcommand an argv selects, and its remaining arguments."""
        command: click.Command = main
        while isinstance(command, click.Group) and argv and argv[0] in command.commands:
            command, argv = command.commands[argv[0]], argv[1:]
        return command, argv

    from service.queue import QUEUES

    for workload in render(VALUE_SETS[value_set]).workloads():
        argv = containers(workload)[0]["args"]
        command, rest = resolve(list(argv))
        assert command is not main, f"{argv}: no such subcommand"
        ctx = click.Context(command, info_name=argv[0], obj=None)
        command.parse_args(ctx, list(rest))  # raises click.UsageError on an unknown option
        if "--queues" in argv:
            queues = argv[argv.index("--queues") + 1].split(",")
            assert set(queues) <= set(QUEUES), argv


def test_sweeper_is_a_single_beat() -> None:
    """Exactly one Celery beat: the sweeper runs one replica and is recreated, never rolled, so beats never overlap."""
    sweeper = render().one("Deployment", "sweeper")
    assert sweeper["spec"]["replicas"] == 1
    assert sweeper["spec"]["strategy"] == {"type": "Recreate"}
    beats = [d for d in render().workloads() if "--beat" in containers(d)[0]["args"]]
    assert [component_of(d) for d in beats] == ["sweeper"]
    assert not [d for d in render({"sweeper": {"enabled": False}}).workloads() if component_of(d) == "sweeper"]


@pytest.mark.parametrize("value_set", SETS)
def test_migration_hook_job_runs_before_install_and_upgrade(value_set: str) -> None:
    """Alembic runs as a pre-install/pre-upgrade hook Job that can reach the database; the API never migrates."""
    rendered = render(VALUE_SETS[value_set])
    job = rendered.one("Job", "migration")
    hooks = set(annotations_of(job)["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations_of(job)["helm.sh/hook-delete-policy"]
    (container,) = containers(job)
    assert container["args"] == ["db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    (secret_ref,) = [e["secretRef"]["name"] for e in container["envFrom"]]
    existing = VALUE_SETS[value_set].get("existingSecret")
    if existing:
        assert secret_ref == existing
    else:
        # Hooks run before the release's Secret exists, so the Job's own hook Secret must come first.
        hook_secret = next(s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == secret_ref)
        assert "pre-install" in annotations_of(hook_secret)["helm.sh/hook"]
        assert int(annotations_of(hook_secret)["helm.sh/hook-weight"]) < int(annotations_of(job)["helm.sh/hook-weight"])
        assert "ITSM_DATABASE_URL" in hook_secret["data"]
    assert _env(container)["ITSM_API__MIGRATE_ON_START"] == "false"
    assert rendered.config_env()["ITSM_API__MIGRATE_ON_START"] == "false"


def test_api_probes_use_livez_and_readyz() -> None:
    """Liveness and startup GET /livez, readiness GET /readyz, on the container port serve listens on."""
    api = render().one("Deployment", "api")
    (container,) = containers(api)
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert container["args"][-1] == "8000"
    for probe, path in (("livenessProbe", "/livez"), ("startupProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    service = render().one("Service", "api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def _probe_command(workload: dict[str, Any]) -> list[str]:
    """The exec command of a worker's liveness probe."""
    (container,) = containers(workload)
    command: list[str] = container["livenessProbe"]["exec"]["command"]
    assert container["startupProbe"]["exec"]["command"] == command
    return command


def test_every_worker_has_a_liveness_check() -> None:
    """Model, delivery and sweeper pods have an exec liveness + startup probe on the worker heartbeat."""
    rendered = render()
    for component in WORKERS:
        command = _probe_command(rendered.one("Deployment", component))
        assert command[:2] == ["python", "-c"]
        assert "/tmp/itsm-triage-worker.heartbeat" in command[2]


def test_worker_liveness_check_fails_on_a_stale_or_missing_heartbeat(tmp_path: Path) -> None:
    """Run the rendered probe command: fresh heartbeat passes, stale or missing fails."""
    heartbeat = tmp_path / "worker.heartbeat"
    values = {"workerHealth": {"heartbeatFile": str(heartbeat), "maxAgeSeconds": 60}}
    command = _probe_command(render(values).one("Deployment", "model-worker"))
    program = command[2]

    def probe() -> int:
        """Exit status of the probe, run with this interpreter as the image's `python`."""
        return subprocess.run([sys.executable, "-c", program], check=False, timeout=30).returncode

    assert probe() == 1  # no heartbeat yet
    heartbeat.touch()
    assert probe() == 0
    old = time.time() - 61
    os.utime(heartbeat, (old, old))
    assert probe() == 1


def test_model_pools_are_ready_only_with_the_model(tmp_path: Path) -> None:
    """The triage and draft pools have a readiness probe on the ready file (run here: missing fails, present
    passes); the delivery worker, sweeper and retrain pool serve no traffic a rollout must wait for."""
    ready = tmp_path / "worker.ready"
    rendered = render({"workerHealth": {"readyFile": str(ready)}, "config": {"learning": {"schedule": "0 3 * * 6"}}})
    for component in MODEL_POOLS:
        (container,) = containers(rendered.one("Deployment", component))
        command = container["readinessProbe"]["exec"]["command"]
        assert command[:2] == ["python", "-c"] and str(ready) in command[2]
    for component in ("delivery-worker", "sweeper", LEARN_POOL):
        (container,) = containers(rendered.one("Deployment", component))
        assert "readinessProbe" not in container

    def probe() -> int:
        return subprocess.run([sys.executable, "-c", command[2]], check=False, timeout=30).returncode

    assert probe() == 1
    ready.touch()
    assert probe() == 0


def _grace(rendered: Any, component: str) -> int:
    return int(pod_spec(rendered.one("Deployment", component))["terminationGracePeriodSeconds"])


def test_each_pool_has_the_grace_its_task_needs() -> None:
    """A batch task claims work until half its time limit: its pool's grace covers that and the batch in hand; the
    retrain pool's covers its time budget; a set value wins."""
    limits = {"worker": {"task_time_limit_s": 1000, "draft_time_limit_s": 400}, "learning": {"schedule": "0 3 * * 6"}}
    rendered = render({"config": limits})
    assert _grace(rendered, "model-worker") == 560 and _grace(rendered, "draft-worker") == 260
    assert _grace(rendered, LEARN_POOL) == 30 * 60 + 300 and _grace(rendered, "delivery-worker") == 60
    folded = render({"config": limits, "draftWorker": {"enabled": False}})
    assert _grace(folded, "model-worker") == 560  # serving both queues: the longer
    fixed = render({"config": limits, "modelWorker": {"terminationGracePeriodSeconds": 90}})
    assert _grace(fixed, "model-worker") == 90 and _grace(fixed, "draft-worker") == 260


@pytest.mark.parametrize("value_set", SETS)
def test_network_policies_limit_worker_egress(value_set: str) -> None:
    """Every pod is selected by a NetworkPolicy; workers reach only DNS, the database, the broker and (not the
    model or retrain workers) the ITSM hosts; they accept nothing but metric scrapes."""
    rendered = render(VALUE_SETS[value_set])
    policies = {component_of(p): p for p in rendered.of_kind("NetworkPolicy")}
    values = merge(_chart_values(), VALUE_SETS[value_set])
    np = values["networkPolicy"]
    base_ports = {53, np["database"]["port"], np["broker"]["port"]}
    itsm_ports = set(np["itsm"]["ports"])
    metrics_port = values["config"]["worker"]["metrics_port"]
    for deployment in rendered.of_kind("Deployment"):
        component = component_of(deployment)
        policy = policies[component]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items(), component
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        egress_ports: set[int] = set()
        for rule in policy["spec"]["egress"]:
            assert rule.get("ports"), f"{component}: an egress rule without ports allows everything"
            egress_ports |= {p["port"] for p in rule["ports"]}
        if component in (*MODEL_POOLS, LEARN_POOL):
            assert egress_ports == base_ports, component
        else:
            assert egress_ports == base_ports | itsm_ports, component
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        if component in (*WORKERS, LEARN_POOL):
            assert ingress_ports == {metrics_port}, component
        else:
            assert ingress_ports == {values["api"]["port"]}, component


def test_network_policy_peers_are_passed_through() -> None:
    """Operators can pin the database, broker and API clients to specific peers."""
    for component in MODEL_POOLS:
        policy = render(VALUE_SETS["everything"]).one("NetworkPolicy", component)
        peers = [rule.get("to") for rule in policy["spec"]["egress"]]
        assert [{"ipBlock": {"cidr": "10.20.0.0/16"}}] in peers
        assert [{"podSelector": {"matchLabels": {"app": "redis"}}}] in peers


def test_keda_scales_model_workers_on_the_triage_list() -> None:
    """KEDA on: a ScaledObject targets the model-worker Deployment on the Redis `triage` list, replicas left to it."""
    rendered = render(VALUE_SETS["keda"])
    scaled = rendered.one("ScaledObject", "model-worker")
    worker = rendered.one("Deployment", "model-worker")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": worker["metadata"]["name"],
    }
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "triage"
    assert trigger["metadata"]["address"] == "redis-master.data:6379"
    assert set(trigger["metadata"]) <= {
        "address",
        "listName",
        "listLength",
        "activationListLength",
        "databaseIndex",
        "enableTLS",
    }
    auth = rendered.one("TriggerAuthentication", "model-worker")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "redis", "key": "pw"}]
    assert "replicas" not in worker["spec"]
    assert not rendered.of_kind("HorizontalPodAutoscaler")


def test_monitors_scrape_metrics_ports() -> None:
    """The ServiceMonitor scrapes the API Service's /metrics; the PodMonitor the workers' metrics ports."""
    rendered = render(VALUE_SETS["keda"])
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service", "api")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    pod_monitor = rendered.one("PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    (selected,) = pod_monitor["spec"]["selector"]["matchExpressions"]
    assert set(selected["values"]) == {*WORKERS, LEARN_POOL}  # the value set runs the retrain pool
    for component in (*WORKERS, LEARN_POOL):
        (container,) = containers(rendered.one("Deployment", component))
        assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]


def test_pods_roll_when_settings_change() -> None:
    """A changed setting changes the pod template (checksum annotation), so `helm upgrade` restarts pods."""

    def checksum(values: dict[str, Any]) -> str:
        """The config checksum on the API pod template."""
        return render(values).one("Deployment", "api")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) != checksum({"config": {"log": {"level": "DEBUG"}}})


def _chart_values() -> dict[str, Any]:
    """The chart's default values as Helm loads them."""
    import helm_python as helm

    with helm.Chart.load(CHART_DIR) as chart:
        return chart.values


def _documented_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted values keys down to free-form maps (annotations, resources, ...) and lists."""
    free_form = {
        "resources",
        "podSecurityContext",
        "containerSecurityContext",
        "nodeSelector",
        "affinity",
        "startup",  # probe timings: standard Kubernetes probe fields
        "liveness",
        "readiness",
    }
    settings_leaves = {".".join(leaf.values_path) for leaf in leaves()}  # map-valued settings stay whole
    keys: set[str] = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, dict) and value and key not in free_form and dotted not in settings_leaves:
            keys |= _documented_keys(value, dotted + ".")
    return keys


def test_readme_documents_every_values_key() -> None:
    """The chart README names every values key (in backticks), the Settings ones included."""
    import yaml

    readme = (CHART_DIR / "README.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_.]+)`", readme))
    keys = _documented_keys(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))
    missing = sorted(k for k in keys if k not in documented)
    assert missing == [], "values keys missing from helm/itsm-triage/README.md"
