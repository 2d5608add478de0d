"""Walk the Settings class into its leaf fields, each with the ITSM_* variable and the chart values path it maps to."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr

from service.settings import Settings

ENV_PREFIX = "ITSM_"
NESTED_DELIMITER = "__"
# URLs that embed credentials (user:password@host) travel in the Secret although they are plain strings.
CREDENTIAL_URLS = frozenset({("database_url",), ("broker_url",)})
# Defaults the chart changes on purpose (marked "[chart override]" in values.yaml and "(chart)" in the README).
CHART_OVERRIDES: dict[tuple[str, ...], Any] = {
    ("var_dir",): "/var/lib/itsm-triage",  # an emptyDir: the root filesystem is read-only
    ("model", "cache_dir"): "/opt/itsm-triage/models",  # baked into the worker image by Dockerfile.worker
    ("api", "migrate_on_start"): False,  # the pre-install/pre-upgrade hook Job migrates
    ("worker", "metrics_port"): 9100,  # every worker pod serves /metrics (scraped by the PodMonitor)
}


@dataclass(frozen=True)
class Leaf:
    """One setting the service reads: where it lives in Settings, its variable and its chart values path."""

    path: tuple[str, ...]
    annotation: Any
    default: Any
    description: str
    secret: bool

    @property
    def env(self) -> str:
        """The environment variable pydantic-settings reads for this field."""
        return ENV_PREFIX + NESTED_DELIMITER.join(part.upper() for part in self.path)

    @property
    def values_path(self) -> tuple[str, ...]:
        """Where the chart takes this setting from: `secrets.*` for credentials, `config.*` otherwise."""
        return ("secrets" if self.secret else "config", *self.path)


def _mentions(annotation: Any, target: type) -> bool:
    """Whether `target` appears anywhere in a (possibly Optional / generic) annotation."""
    if annotation is target:
        return True
    return any(_mentions(arg, target) for arg in typing.get_args(annotation))


def is_secret(path: tuple[str, ...], annotation: Any) -> bool:
    """Whether a setting belongs in the Secret: any SecretStr, plus the URLs that carry credentials."""
    return _mentions(annotation, SecretStr) or path in CREDENTIAL_URLS


def group_model(annotation: Any) -> type[BaseModel] | None:
    """The nested settings group behind an annotation, or None for a leaf (dicts of models stay leaves)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def walk(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every leaf field of `model`, recursing through nested BaseModel groups."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        group = group_model(field.annotation)
        if group is not None:
            yield from walk(group, path)
            continue
        yield Leaf(
            path=path,
            annotation=field.annotation,
            default=field.get_default(call_default_factory=True),
            description=field.description or "",
            secret=is_secret(path, field.annotation),
        )


def leaves() -> list[Leaf]:
    """All leaves of the service's Settings, read from the class at call time."""
    return list(walk())
