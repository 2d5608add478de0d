"""`itsm-triage` subcommands: model (placeholder module, filled by its owner)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
