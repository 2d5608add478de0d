"""`itsm-triage kb sync | status | search`: the knowledge bases behind grounded drafts."""

from __future__ import annotations

import json

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.settings import Settings


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(kb)


def _engine(settings: Settings) -> Engine:
    """The database, migrated first when allowed (a first sync may precede the first `serve`)."""
    from service.db import make_engine
    from service.migrate import upgrade

    if settings.api.migrate_on_start:
        upgrade(settings)
    return make_engine(settings)


@click.group()
def kb() -> None:
    """Knowledge bases: sync articles from ServiceNow Knowledge / Confluence, inspect, search."""


@kb.command("sync")
@click.option(
    "--source",
    "only",
    type=click.Choice(["servicenow", "confluence"]),
    default=None,
    help="Sync one source only (default: every configured one).",
)
@click.option(
    "--allow-mass-removal",
    is_flag=True,
    help="Remove articles even when the listing lacks more than ITSM_KB__MAX_DELETE_FRACTION of them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report per source.")
@click.pass_obj
def sync(settings: Settings, only: str | None, allow_mass_removal: bool, as_json: bool) -> None:
    """Read changed, unpublished and deleted articles and bring the stored knowledge base in step."""
    from service.knowledge.sync import make_sources, sync_all

    try:
        sources = [s for s in make_sources(settings) if only is None or s.name == only]
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not sources:
        raise click.ClickException(
            "no knowledge base configured: set ITSM_KB__SERVICENOW_ENABLED=true (with ITSM_SERVICENOW__*) and/or "
            "ITSM_KB__CONFLUENCE_URL + ITSM_KB__CONFLUENCE_SPACES" + (f" (asked for --source {only})" if only else "")
        )
    engine = _engine(settings)
    try:
        reports = sync_all(engine, settings, sources, allow_mass_removal=allow_mass_removal)
    finally:
        engine.dispose()
    for report in reports:
        if as_json:
            click.echo(json.dumps(report.as_dict(), sort_keys=True))
            continue
        state = "busy (another sync is running)" if report.busy else ("ok" if report.ok else "incomplete")
        click.echo(
            f"{report.source}: {state}; +{report.added} added, {report.updated} updated, {report.removed} removed, "
            f"{report.articles} articles held, {report.retries} retries"
        )
        for error in report.errors:
            click.echo(f"  error: {error}", err=True)
    if any(r.errors for r in reports):
        raise SystemExit(1)


@kb.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Articles, passages and the last sync of each source."""
    from sqlmodel import Session, func, select

    from service.db import make_engine
    from service.domain.knowledge import KbPassage, KbSyncState

    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            states = session.exec(select(KbSyncState).order_by(KbSyncState.source)).all()
            passages = session.exec(select(func.count()).select_from(KbPassage)).one()
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"cannot read the database ({type(exc).__name__}); is ITSM_DATABASE_URL right and `db upgrade` done?"
        ) from None
    finally:
        engine.dispose()
    rows = [
        {
            "source": s.source,
            "articles": s.articles,
            "last_success_at": s.last_success_at.isoformat() if s.last_success_at else None,
            "last_error": s.last_error,
            "errors_total": s.errors_total,
            "syncing": s.lease_until is not None,
        }
        for s in states
    ]
    if as_json:
        click.echo(json.dumps({"sources": rows, "passages": int(passages)}, sort_keys=True))
        return
    if not rows:
        click.echo("no knowledge base synced yet (itsm-triage kb sync)")
    for r in rows:
        click.echo(
            f"{r['source']:12} articles={r['articles']} last_success={r['last_success_at'] or 'never'} "
            f"errors={r['errors_total']}" + (f"  last error: {r['last_error']}" if r["last_error"] else "")
        )
    click.echo(f"passages     {int(passages)}")


@kb.command("search")
@click.argument("text")
@click.option("--language", default=None, help="The ticket's language (ISO 639-1), preferred among equals.")
@click.option("-k", "k", type=click.IntRange(1, 20), default=5, show_default=True, help="How many articles.")
@click.option("--min-score", type=float, default=None, help="Score floor (default ITSM_KB__MIN_SCORE).")
@click.pass_obj
def search(settings: Settings, text: str, language: str | None, k: int, min_score: float | None) -> None:
    """Show the passages a draft for TEXT would cite (what retrieval finds, with scores)."""
    from sqlmodel import Session

    from service.db import make_engine
    from service.knowledge.retrieval import evidence_for

    if len(text) > 20000:
        raise click.UsageError("TEXT is longer than 20,000 characters")
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            found = evidence_for(
                session,
                text=text,
                language=language,
                k=k,
                token_budget=max(settings.kb.evidence_token_budget, 200 * k),
                min_score=settings.kb.min_score if min_score is None else min_score,
            )
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(f"cannot search ({type(exc).__name__}); has `db upgrade` run?") from None
    finally:
        engine.dispose()
    if not found:
        click.echo("no passage scores above the floor")
    for s in found:
        click.echo(f"{s.score:6.2f}  {s.number}  {s.title}  {s.url or ''}")
        click.echo("        " + s.passage[:200].replace("\n", " "))
