"""`itsm-triage purge` (erasure and retention) and `itsm-triage payloads` (the keys of raw payloads at rest)."""

from __future__ import annotations

import getpass
import json

import click
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.crypto import PREFIX, PayloadCipher, PayloadKeyError, new_key
from service.db import make_engine
from service.domain.tables import InboundEvent
from service.settings import Settings

_REKEY_BATCH = 500


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(purge)
    group.add_command(payloads)


def _actor(given: str | None) -> str:
    """Who the audit row names: --actor, else the operating-system user running the command."""
    if given:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@click.command()
@click.option("--reporter", metavar="EMAIL|ID", help="Erase every ticket this person reported (e-mail or account id).")
@click.option("--ticket", metavar="KEY", help="Erase one ticket: its key (ITSD-42, INC0010042) or source:key.")
@click.option("--expired", is_flag=True, help="Apply the retention settings now (the sweeper does so hourly).")
@click.option("--actor", help="Who asked, for the audit log (default: cli:<your user name>).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@click.pass_obj
def purge(
    settings: Settings, reporter: str | None, ticket: str | None, expired: bool, actor: str | None, as_json: bool
) -> None:
    """Erase one person's or one ticket's data everywhere, or apply retention; audit-logged either way.

    Erasure deletes the tickets with their events (raw payloads), triages, drafts, deliveries and corrections,
    so exports no longer contain them, and logs the erasure for the triage workers, which drop the tickets from
    their ticket memory within a minute. The audit log keeps who erased what and when, never the text.
    """
    from service.retention import erase, purge_expired

    chosen = [name for name, on in (("--reporter", reporter), ("--ticket", ticket), ("--expired", expired)) if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --reporter, --ticket or --expired")
    engine = make_engine(settings)
    try:
        if expired:
            r = purge_expired(engine, settings)
            result: dict[str, object] = {"payloads": r.payloads, "tickets": r.tickets, "erasure_ids": r.erasure_ids}
        else:
            e = erase(engine, actor=_actor(actor), reporter=reporter, ticket=ticket)
            result = {"tickets": e.tickets, "rows": e.counts, "erasure_id": e.erasure_id}
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"cannot write the database ({type(exc).__name__}); is ITSM_DATABASE_URL right and `db upgrade` done?"
        ) from None
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    elif expired:
        click.echo(f"raw payloads erased: {result['payloads']}; closed tickets' texts erased: {result['tickets']}")
    else:
        rows = ", ".join(f"{k}={v}" for k, v in sorted(e.counts.items())) or "nothing stored"
        click.echo(f"erased {e.tickets} ticket(s): {rows} (erasure {e.erasure_id}, audit-logged)")


@click.group()
def payloads() -> None:
    """Raw webhook payloads at rest: make a key, re-encrypt under the newest key, read one."""


@payloads.command("new-key")
def new_key_command() -> None:
    """Print a fresh key; put it FIRST in ITSM_PRIVACY__PAYLOAD_KEYS (comma-separated) to rotate."""
    click.echo(new_key())


def _cipher(settings: Settings) -> PayloadCipher:
    try:
        cipher = PayloadCipher.from_settings(settings)
    except PayloadKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if cipher is None:
        raise click.ClickException("ITSM_PRIVACY__PAYLOAD_KEYS is not set: raw payloads are not kept")
    return cipher


@payloads.command("rekey")
@click.pass_obj
def rekey(settings: Settings) -> None:
    """Re-encrypt every kept payload under the first key, so older keys can then be removed."""
    cipher = _cipher(settings)
    engine = make_engine(settings)
    table = InboundEvent.__table__  # type: ignore[attr-defined]
    done = failed = 0
    last = 0
    try:
        while True:
            with engine.begin() as conn:
                rows = conn.execute(
                    select(table.c.id, table.c.payload)
                    .where(table.c.id > last, table.c.payload.like(f"{PREFIX}%"))
                    .order_by(table.c.id)
                    .limit(_REKEY_BATCH)
                ).all()
                for row_id, stored in rows:
                    if cipher.is_current(stored):
                        continue
                    try:
                        conn.execute(update(table).where(table.c.id == row_id).values(payload=cipher.rotate(stored)))
                        done += 1
                    except PayloadKeyError:
                        failed += 1
            if len(rows) < _REKEY_BATCH:
                break
            last = rows[-1][0]
    finally:
        engine.dispose()
    click.echo(f"re-encrypted {done} payload(s) under the first key; {failed} could not be opened by any key")
    if failed:
        raise SystemExit(1)


@payloads.command("show")
@click.argument("event_id", type=int)
@click.pass_obj
def show(settings: Settings, event_id: int) -> None:
    """Print one event's kept (redacted) raw payload, decrypted."""
    cipher = _cipher(settings)
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                select(InboundEvent.__table__.c.payload).where(InboundEvent.__table__.c.id == event_id)  # type: ignore[attr-defined]
            ).scalar()
    finally:
        engine.dispose()
    if stored is None:
        raise click.ClickException(f"no event {event_id}")
    if not stored:
        raise click.ClickException(f"event {event_id}'s raw payload is not kept (no key then, or past retention)")
    try:
        click.echo(cipher.open(stored))
    except PayloadKeyError as exc:
        raise click.ClickException(str(exc)) from None
