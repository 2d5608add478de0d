"""The Settings-derived parts of the chart: values.schema.json's `config`/`secrets` and the README's tables.

`python -m tests.deploy.chart_schema` rewrites those parts in place (the rest of the schema and README, which cover
the Kubernetes knobs, is maintained by hand); the tests fail when the committed files differ from what this makes.
values.yaml itself is edited by hand (it carries comments): the tests name any key it lacks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter

from service.settings import Settings
from tests.deploy.settings_walk import CHART_OVERRIDES, group_model, is_secret, leaves

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "itsm-triage"
SCHEMA_PATH = CHART_DIR / "values.schema.json"
README_PATH = CHART_DIR / "README.md"
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


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def readme_tables() -> dict[str, str]:
    """The README's `config` and `secrets` reference tables, keyed by their marker name."""
    config = ["| Key | Variable | Default | Description |", "| --- | --- | --- | --- |"]
    secrets = ["| Key | Secret key / variable | Description |", "| --- | --- | --- |"]
    for leaf in leaves():
        key = ".".join(leaf.values_path)
        if leaf.secret:
            secrets.append(f"| `{key}` | `{leaf.env}` | {_cell(leaf.description)} |")
            continue
        default = json.dumps(
            CHART_OVERRIDES.get(leaf.path, TypeAdapter(leaf.annotation).dump_python(leaf.default, mode="json"))
        )
        shown = "see values.yaml" if len(default) > 40 else f"`{_cell(default)}`"
        if leaf.path in CHART_OVERRIDES:
            shown += " (chart)"
        config.append(f"| `{key}` | `{leaf.env}` | {shown} | {_cell(leaf.description)} |")
    return {"settings-config": "\n".join(config), "settings-secrets": "\n".join(secrets)}


def _marked(name: str) -> re.Pattern[str]:
    """The README region between <!-- name:start --> and <!-- name:end -->."""
    return re.compile(rf"(<!-- {name}:start -->\n)(.*?)(\n<!-- {name}:end -->)", re.S)


def readme_regions(text: str) -> dict[str, str]:
    """The committed content of each generated README region."""
    found = {name: _marked(name).search(text) for name in readme_tables()}
    return {name: match.group(2) if match else "" for name, match in found.items()}


def render_readme(text: str) -> str:
    """The README with its generated regions refreshed."""
    for name, table in readme_tables().items():
        text = _marked(name).sub(lambda m, table=table: m.group(1) + table + m.group(3), text)
    return text


def main() -> int:
    """Rewrite the Settings-derived sections of values.schema.json and README.md."""
    SCHEMA_PATH.write_text(render_schema(json.loads(SCHEMA_PATH.read_text())))
    README_PATH.write_text(render_readme(README_PATH.read_text()))
    print(f"wrote {SCHEMA_PATH} and {README_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
