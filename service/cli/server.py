"""`itsm-triage run | serve | worker | db upgrade | replay`."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
