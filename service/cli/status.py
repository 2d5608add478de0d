"""`itsm-triage status`: what the database holds, by state (events, tickets, triages, drafts, deliveries)."""

from __future__ import annotations

import json

import click
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.db import make_engine
from service.domain.tables import Delivery, InboundEvent, Suggestion, Ticket, Triage
from service.settings import Settings


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(status)


def counts(settings: Settings) -> dict[str, object]:
    """Row counts per table and per status."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:

            def by_status(table: type) -> dict[str, int]:
                column = table.status  # type: ignore[attr-defined]
                rows = conn.execute(select(column, func.count()).group_by(column)).all()
                return {str(state): int(n) for state, n in rows}

            return {
                "events": by_status(InboundEvent),
                "tickets": conn.execute(select(func.count()).select_from(Ticket)).scalar_one(),
                "triages": conn.execute(select(func.count()).select_from(Triage)).scalar_one(),
                "suggestions": by_status(Suggestion),
                "deliveries": by_status(Delivery),
            }
    finally:
        engine.dispose()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Show how many events, tickets, triages, drafts and deliveries are stored, by state."""
    try:
        data = counts(settings)
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"cannot read the database ({type(exc).__name__}); is ITSM_DATABASE_URL right and `db upgrade` done?"
        ) from None
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    for name, value in data.items():
        detail = ", ".join(f"{k}={v}" for k, v in sorted(value.items())) if isinstance(value, dict) else value
        click.echo(f"{name:12} {detail or 0}")
