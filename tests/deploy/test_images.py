"""The container images: pinned multi-stage builds, non-root, torch only in the worker image.

No container engine runs in CI, so the Dockerfiles are checked as text against the chart's assumptions, and the
property the API image depends on (the service imports and starts without torch) is checked by running it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import CHART_DIR, REPO

DOCKERFILES = {"api": REPO / "Dockerfile.api", "worker": REPO / "Dockerfile.worker"}
PACKAGES = ("service", "workers", "models", "migrations")  # what the Dockerfiles COPY and pip installs
ML_PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "gguf", "sklearn")


@dataclass
class Stage:
    """One FROM ... stage of a Dockerfile."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with this keyword, in order."""
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    """A parsed Dockerfile: global ARG defaults and its stages."""

    args: dict[str, str]
    stages: list[Stage]

    def resolve(self, text: str, stage: Stage | None = None) -> str:
        """Expand ${NAME} / $NAME from ARG defaults (global, then the stage's own) and ENV values."""
        scope = dict(self.args)
        for kw, args in stage.instructions if stage else []:
            if kw in ("ARG", "ENV"):
                scope.update(_assignments(args, scope))
        return re.sub(r"\$\{?(\w+)\}?", lambda m: scope.get(m.group(1), m.group(0)), text)

    @property
    def final(self) -> Stage:
        """The stage that becomes the image."""
        return self.stages[-1]


def _assignments(args: str, scope: dict[str, str]) -> dict[str, str]:
    """NAME=value pairs of an ARG / ENV instruction (a bare ARG NAME inherits the global default)."""
    out: dict[str, str] = {}
    for token in args.split():
        name, sep, value = token.partition("=")
        if not sep:
            out[name] = scope.get(name, "")
            continue
        known = {**scope, **out}

        def expand(match: re.Match[str], known: dict[str, str] = known) -> str:
            """One $NAME reference, left as written when unknown."""
            return known.get(match.group(1), match.group(0))

        out[name] = re.sub(r"\$\{?(\w+)\}?", expand, value)
    return out


def parse(path: Path) -> Dockerfile:
    """Split a Dockerfile into instructions (comments dropped, continuation lines joined)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = Dockerfile(args={}, stages=[])
    for line in filter(None, (x.strip() for x in joined.splitlines())):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            result.stages.append(Stage(base=base.strip(), name=name.strip() or None))
        elif not result.stages:
            if keyword == "ARG":
                result.args.update(_assignments(args, result.args))
        else:
            result.stages[-1].instructions.append((keyword, args.strip()))
    return result


def _chart_values() -> dict[str, object]:
    """values.yaml as written."""
    loaded: dict[str, object] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return loaded


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_images_are_pinned_to_exact_tags(image: str) -> None:
    """Every external base is name:exact-version (never latest, never a bare major)."""
    dockerfile = parse(DOCKERFILES[image])
    names = set()
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        if base in names:
            continue  # an earlier stage of this file
        repo, _, tag = base.rpartition(":")
        assert repo and tag, f"{image}: unpinned base {base!r}"
        assert tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), f"{image}: tag {tag!r} is not an exact version"
        if stage.name:
            names.add(stage.name)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_are_multi_stage_with_a_clean_final_stage(image: str) -> None:
    """The final stage starts from the clean base, copies built artefacts, and installs nothing itself."""
    dockerfile = parse(DOCKERFILES[image])
    assert len(dockerfile.stages) >= 2
    final = dockerfile.final
    earlier = {s.name for s in dockerfile.stages[:-1]}
    assert final.base not in earlier, "the runtime stage must not inherit the build stage's tools"
    assert any(args.startswith("--from=") for args in final.all("COPY"))
    for run in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip|pip3|conda|gcc|make|build-essential|curl|wget)\b", run), run


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_run_as_the_chart_user(image: str) -> None:
    """The image's user is the non-root uid/gid the chart's pod security context demands."""
    dockerfile = parse(DOCKERFILES[image])
    (user,) = dockerfile.final.all("USER")
    pod = _chart_values()["podSecurityContext"]
    assert isinstance(pod, dict)
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert int(user.split(":")[0]) > 0


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_agree_with_the_chart_paths(image: str) -> None:
    """var_dir (and the model dir of the worker) in the image are the paths the chart configures."""
    dockerfile = parse(DOCKERFILES[image])
    final = dockerfile.final
    env: dict[str, str] = {}
    for args in final.all("ENV"):
        env.update(_assignments(dockerfile.resolve(args, final), {}))
    config = _chart_values()["config"]
    assert isinstance(config, dict)
    assert env["ITSM_VAR_DIR"] == config["var_dir"]
    assert dockerfile.resolve(final.all("WORKDIR")[0]) == config["var_dir"]
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["itsm-triage"]
    if image == "worker":
        assert env["ITSM_MODEL__CACHE_DIR"] == config["model"]["cache_dir"]
        assert env["HF_HUB_OFFLINE"] == "1"


def test_only_the_worker_image_gets_torch_and_the_model() -> None:
    """The API image installs the package without extras; the worker installs [ml] and bakes the model in."""
    api, worker = parse(DOCKERFILES["api"]), parse(DOCKERFILES["worker"])
    api_runs = " ".join(r for s in api.stages for r in s.all("RUN"))
    assert re.search(r"pip install [^\n]*\s\.(\s|$)", api_runs)
    assert "[ml]" not in api_runs and "torch" not in api_runs and "model fetch" not in api_runs
    assert "torch" not in api.resolve(api.final.base)
    worker_runs = {s.name: " ".join(s.all("RUN")) for s in worker.stages}
    assert any('".[ml]"' in r or "'.[ml]'" in r or " .[ml]" in r for r in worker_runs.values())
    (fetch_stage,) = [name for name, runs in worker_runs.items() if "itsm-triage model fetch" in runs]
    copied = [c for c in worker.final.all("COPY") if c.startswith(f"--from={fetch_stage} ")]
    assert copied, "the fetched model must be copied into the runtime stage"
    assert "pytorch/pytorch:" in worker.resolve(worker.final.base) and "runtime" in worker.resolve(worker.final.base)


def test_base_dependencies_leave_torch_to_the_ml_extra() -> None:
    """`pip install .` (the API image) pulls no ML package; `[ml]` does."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert not [pkg for pkg in ("torch", "transformers", "peft", "accelerate") if pkg in base]
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["ml"])
    assert project["scripts"]["itsm-triage"] == "service.cli:main"


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    """The build context is an allow-list, and it includes every path the Dockerfiles COPY."""
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert patterns[0] == "**"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for path in DOCKERFILES.values():
        for stage in parse(path).stages:
            for args in stage.all("COPY"):
                if args.startswith("--from="):
                    continue
                sources = args.split()[:-1]
                for source in sources:
                    assert source.rstrip("/") in allowed, f"{path.name} copies {source}, excluded by .dockerignore"
                    assert (REPO / source).exists(), f"{path.name} copies missing {source}"
    assert not allowed & {".venv", "var", "tests", ".git", "helm"}
    for path in DOCKERFILES.values():
        copied = {args.split()[0] for stage in parse(path).stages for args in stage.all("COPY")}
        assert set(PACKAGES) <= copied, f"{path.name} must copy every package pip installs"


NO_TORCH_PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys, tempfile
    from pathlib import Path

    BLOCKED = set(sys.argv[1].split(","))

    class Block:
        \"\"\"Refuse ML packages as if they were not installed (the API image has none).\"\"\"

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not in the API image")
            return None

    sys.meta_path.insert(0, Block())
    for package in ("service", "workers"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            if not info.name.endswith("__main__"):  # __main__ runs the CLI
                importlib.import_module(info.name)

    from service.api.app import create_app
    from service.settings import Settings
    from workers.app import make_worker_app

    tmp = Path(tempfile.mkdtemp())
    settings = Settings(
        database_url=f"sqlite:///{tmp}/db.sqlite",
        broker_url=f"sqla+sqlite:///{tmp}/broker.sqlite",
        var_dir=tmp,
        api={"dev_mode": True},
    )
    create_app(settings)
    make_worker_app(settings)
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("no-ml-imports-ok")
    """
)


def test_api_and_delivery_code_runs_without_torch() -> None:
    """Everything the API image runs (API, CLI, delivery worker, sweeper) imports and builds its app with no ML
    package installed."""
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH_PROBE, ",".join(ML_PACKAGES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no-ml-imports-ok" in result.stdout


def test_the_package_wheel_ships_every_data_file(tmp_path: Path) -> None:
    """`pip install .` in the images installs a wheel: it must carry the templates, static files, migration
    template, samples and adapter files the packages hold, or the containers fail where a checkout works."""
    context = tmp_path / "context"
    for name in ("pyproject.toml", "README.md", "alembic.ini"):
        context.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, context / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(REPO / package, context / package, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    data_files = {
        path.relative_to(context).as_posix()
        for package in PACKAGES
        for path in (context / package).rglob("*")
        if path.is_file() and path.suffix != ".py"
    }
    assert data_files, "expected templates/static files in the packages"
    assert sorted(data_files - shipped) == []
