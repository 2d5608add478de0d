"""The README's configuration table, generated from the Settings class so it can never drift."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.settings import Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


def iter_settings(model: type[BaseModel] = Settings, prefix: str = "ITSM_") -> Iterator[tuple[str, FieldInfo]]:
    """(environment variable, field) for every leaf setting, walking nested groups."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_settings(annotation, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}", field


def _default(field: FieldInfo) -> str:
    """A short, secret-free rendering of a field's default."""
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, dict | list | tuple) and not value:
        return "empty"
    text = str(value.value if hasattr(value, "value") else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pydantic.types.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("pathlib.", "")
    return text.replace("service.settings.", "").replace("|", "or")


def settings_table() -> str:
    """Markdown table: variable, type, default, meaning."""
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for env, field in iter_settings():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env}` | {_type(field)} | `{_default(field)}` | {description} |")
    return "\n".join(rows)


def render_into(readme: str) -> str:
    """The README text with its generated table replaced by the current one."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"
