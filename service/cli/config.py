"""`itsm-triage config`: show the effective settings and regenerate the README's table."""

from __future__ import annotations

from pathlib import Path

import click

from service.config_doc import iter_settings, render_into, settings_table
from service.settings import Settings


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(config)


@click.group()
def config() -> None:
    """Inspect configuration."""


@config.command("table")
@click.option(
    "--readme",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rewrite the table between the markers in this README instead of printing it.",
)
def table(readme: Path | None) -> None:
    """Print the Markdown table of every ITSM_* setting (generated from the Settings class)."""
    if readme is None:
        click.echo(settings_table())
        return
    readme.write_text(render_into(readme.read_text(encoding="utf-8")), encoding="utf-8")
    click.echo(f"updated {readme}")


@config.command("show")
@click.pass_obj
def show(settings: Settings) -> None:
    """Print the effective value of every setting (secrets masked)."""
    flat = settings.model_dump(mode="json")
    for env, _field in iter_settings():
        value: object = flat
        for part in env.removeprefix("ITSM_").lower().split("__"):
            value = value.get(part) if isinstance(value, dict) else None
        click.echo(f"{env}={value}")
    for line in label_map_warnings(settings):
        click.echo(f"warning: {line}", err=True)


def label_map_warnings(settings: Settings) -> list[str]:
    """The label maps checked against the live adapter's label sets (read from triage.json; no torch)."""
    if settings.model.backend != "hf":
        return []
    from models.adapter import AdapterError, read_meta, resolve_adapter  # lazily: the CLI may reach models/
    from service.domain.label_maps import map_warnings

    try:
        fields = read_meta(resolve_adapter(settings.model.adapter)).get("fields") or {}
    except (AdapterError, OSError, ValueError) as exc:
        return [f"label maps not checked: {exc}"]
    return [w.message() for w in map_warnings(settings, fields)]
