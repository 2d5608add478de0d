"""The `config` and `secrets` parts of the chart's values.schema.json, generated from Settings.

`python -m tests.deploy.chart_schema` rewrites those two parts in place (the rest of the schema, which covers the
Kubernetes knobs, is maintained by hand); the tests fail when the committed file differs from what this produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter

from service.settings import Settings
from tests.deploy.settings_walk import group_model, is_secret

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "itsm-triage"
SCHEMA_PATH = CHART_DIR / "values.schema.json"
# Keywords that only annotate: dropped so the schema stays small and stable across pydantic versions.
_NOISE = {"title", "writeOnly", "format", "default"}


def _inline(node: Any, defs: dict[str, Any], *, names: bool = False) -> Any:
    """Resolve local $refs and drop annotation-only keywords (Helm 3's validator handles no $defs).

    `names` marks a `properties` mapping, whose keys are field names rather than keywords and are all kept.
    """
    if isinstance(node, dict):
        if "$ref" in node and not names:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        if names:
            return {k: _inline(v, defs) for k, v in node.items()}
        return {
            k: _inline(v, defs, names=k == "properties") for k, v in node.items() if k not in _NOISE and k != "$defs"
        }
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def _leaf_schema(annotation: Any, metadata: list[Any], description: str, *, secret: bool) -> dict[str, Any]:
    """JSON schema of one setting as it appears in values (secrets: a string, empty meaning unset)."""
    if secret:
        return {"type": ["string", "null"], "description": description}
    raw = TypeAdapter(Annotated[annotation, *metadata] if metadata else annotation).json_schema()
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    schema["description"] = description
    return schema


def _group_schema(model: type[BaseModel], *, secret: bool, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema with one property per field of `model` that belongs to this section."""
    props: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        group = group_model(field.annotation)
        if group is not None:
            sub = _group_schema(group, secret=secret, prefix=path)
            if sub["properties"]:
                props[name] = sub
            continue
        if is_secret(path, field.annotation) == secret:
            props[name] = _leaf_schema(field.annotation, field.metadata, field.description or "", secret=secret)
    return {"type": "object", "additionalProperties": False, "properties": props}


def settings_sections() -> dict[str, Any]:
    """The generated `config` and `secrets` property schemas."""
    return {
        "config": _group_schema(Settings, secret=False),
        "secrets": _group_schema(Settings, secret=True),
    }


def render_schema(current: dict[str, Any]) -> str:
    """The whole values.schema.json text with its Settings-derived sections refreshed."""
    updated = dict(current)
    updated["properties"] = {**current["properties"], **settings_sections()}
    return json.dumps(updated, indent=2) + "\n"


def main() -> int:
    """Rewrite the Settings-derived sections of values.schema.json."""
    SCHEMA_PATH.write_text(render_schema(json.loads(SCHEMA_PATH.read_text())))
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
