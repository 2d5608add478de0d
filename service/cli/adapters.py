"""`itsm-triage adapters list | show | register | promote | shadow | retire | rollback | check` and `itsm-triage
retrain`: the adapter registry and the learning loop from the command line (the Adapters page shows the same)."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.settings import Settings


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(adapters)
    group.add_command(retrain)


def _engine(settings: Settings) -> Engine:
    """The database, migrated first when allowed (the registry may be used before the first `serve`)."""
    from service.db import make_engine
    from service.migrate import upgrade

    if settings.api.migrate_on_start:
        upgrade(settings)
    return make_engine(settings)


def _actor() -> str:
    """Who changed a status from the command line (the audit log's actor)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _default_adapter(settings: Settings) -> Path:
    """The configured adapter (the shipped default when unset): the registry's first live one."""
    from models.adapter import AdapterError, resolve_adapter

    try:
        return resolve_adapter(settings.model.adapter)
    except AdapterError as exc:
        raise click.ClickException(str(exc)) from None


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2 if getattr(exc, "status", 409) in (404, 422) else 1)


@click.group()
def adapters() -> None:
    """The adapter registry: versions, status, gate figures; promote, shadow, retire, roll back."""


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def list_cmd(settings: Settings, as_json: bool) -> None:
    """Every registered adapter, newest first (registers the configured one as v1 on first use)."""
    from service.learning import registry, views

    engine = _engine(settings)
    try:
        with _db_errors():
            registry.ensure_live(engine, settings, _default_adapter(settings))
            rows = views.rows(engine)
    except registry.RegistryError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2, default=str))
        return
    click.echo(f"{'version':<8} {'status':<10} {'gate':<7} {'trained':<17} {'reviewed':>8} {'held out':>8}  figures")
    for r in rows:
        click.echo(
            f"{r.version:<8} {r.status:<10} {r.gate or '-':<7} {r.trained:<17} {r.reviewed:>8} {r.holdout:>8}  "
            f"{r.figures}"
        )
        click.echo(f"{'':<8} {r.changed}: {r.reason}")


@adapters.command("show")
@click.argument("version")
@click.pass_obj
def show(settings: Settings, version: str) -> None:
    """One adapter's registry row with its gate report and shadow comparison, as JSON."""
    from service.learning import registry, views

    engine = _engine(settings)
    try:
        with _db_errors():
            row = views.one(engine, version)
    except registry.RegistryError as exc:
        _fail(exc)
    click.echo(json.dumps(row.as_dict(full=True), indent=2, default=str))


@adapters.command("register")
@click.option("--adapter", "directory", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--live", is_flag=True, help="Make it live at once (e.g. the first adapter trained on your history).")
@click.pass_obj
def register_cmd(settings: Settings, directory: str, live: bool) -> None:
    """Add an adapter trained with `itsm-triage train` to the registry, as a candidate (or live)."""
    from service.learning import registry

    engine = _engine(settings)
    try:
        with _db_errors():
            registry.ensure_live(engine, settings, _default_adapter(settings))
            row = registry.register(engine, settings, Path(directory), actor=_actor(), reason="registered by hand")
            click.echo(f"{row.version}: {row.status} ({row.sha256[:12]}, {row.size_bytes / 1e6:.1f} MB)")
            if live:
                changes = registry.promote(
                    engine, row.version, actor=_actor(), force=True, reason="registered live by hand",
                    base_model=settings.model.base,
                )  # fmt: skip
                _echo_changes(changes)
    except registry.RegistryError as exc:
        _fail(exc)


@adapters.command("promote")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even though it did not pass the gate (audit-logged).")
@click.option("--reason", default=None, help="Why (kept in the registry and the audit log).")
@click.pass_obj
def promote(settings: Settings, version: str, force: bool, reason: str | None) -> None:
    """Make an adapter live; workers switch to it between batches (within ITSM_LEARNING__ADAPTER_SYNC_S)."""
    from service.learning import registry

    engine = _engine(settings)
    try:
        with _db_errors():
            changes = registry.promote(
                engine, version, actor=_actor(), force=force, reason=reason, base_model=settings.model.base
            )
    except registry.RegistryError as exc:
        _fail(exc)
    _echo_changes(changes)


@adapters.command("shadow")
@click.argument("version")
@click.pass_obj
def shadow(settings: Settings, version: str) -> None:
    """Run an adapter in shadow: workers predict with it too, only the live one acts, both are stored."""
    from service.learning import registry

    engine = _engine(settings)
    try:
        with _db_errors():
            changes = registry.start_shadow(engine, version, actor=_actor(), reason="shadowing (started by hand)")
    except registry.RegistryError as exc:
        _fail(exc)
    _echo_changes(changes)


@adapters.command("retire")
@click.argument("version")
@click.option("--reason", required=True, help="Why it is turned down.")
@click.pass_obj
def retire(settings: Settings, version: str, reason: str) -> None:
    """Turn a candidate or shadow adapter down."""
    from service.learning import registry

    engine = _engine(settings)
    try:
        with _db_errors():
            changes = registry.retire(engine, version, actor=_actor(), reason=reason)
    except registry.RegistryError as exc:
        _fail(exc)
    _echo_changes(changes)


@adapters.command("rollback")
@click.option("--reason", required=True, help="Why (kept in the registry and the audit log).")
@click.pass_obj
def rollback_cmd(settings: Settings, reason: str) -> None:
    """Retire the live adapter and make the one it replaced live again."""
    from service.learning import registry

    engine = _engine(settings)
    try:
        with _db_errors():
            changes = registry.rollback(engine, actor=_actor(), reason=reason)
    except registry.RegistryError as exc:
        _fail(exc)
    _echo_changes(changes)


@adapters.command("check")
@click.pass_obj
def check(settings: Settings) -> None:
    """Run the shadow comparison and the rollback check now (the beat: every ITSM_LEARNING__CHECK_INTERVAL_S)."""
    from service.learning.checks import run_checks

    engine = _engine(settings)
    with _db_errors():
        report = run_checks(engine, settings, holder=_actor())
    for line in report.lines():
        click.echo(line)


@click.command()
@click.option(
    "--time-budget", type=click.FloatRange(min=0.1), default=None, help="Minutes (ITSM_LEARNING__TIME_BUDGET_MIN)."
)
@click.option(
    "--on-pass",
    type=click.Choice(["shadow", "promote", "candidate"]),
    default=None,
    help="What a candidate that passes the gate becomes (ITSM_LEARNING__ON_GATE_PASS).",
)
@click.option("--keep-files", is_flag=True, help="Keep the training and held-out files under var/learning/.")
@click.pass_obj
def retrain(settings: Settings, time_budget: float | None, on_pass: str | None, keep_files: bool) -> None:
    """Train a candidate on the live adapter's data plus every reviewed ticket, gate it on the most recent reviews,
    then shadow, promote or keep it as ITSM_LEARNING__ON_GATE_PASS says."""
    from service.cli.model import model_config
    from service.learning import lease, registry
    from service.learning.retrain import RetrainError
    from service.learning.retrain import retrain as run

    engine = _engine(settings)
    try:
        with _db_errors():
            outcome = run(
                engine,
                settings,
                model_config(settings),
                default_adapter=_default_adapter(settings),
                actor=_actor(),
                time_budget_min=time_budget,
                on_pass=on_pass,
                keep_files=keep_files,
                log_fn=click.echo,
            )
    except (registry.RegistryError, RetrainError, lease.Busy) as exc:
        _fail(exc)
    except ValueError as exc:  # the data cannot train (e.g. a field with one class): say so, exit non-zero
        _fail(exc)
    if outcome.candidate is None:
        click.echo(outcome.message)
        return
    verdict = "passed" if outcome.verdict and outcome.verdict.passed else "refused"
    click.echo(f"{outcome.candidate.version}: {verdict} by the gate after {outcome.seconds.get('total', 0):.0f}s")
    for line in outcome.verdict.findings if outcome.verdict else []:
        click.echo(f"  {line}")
    _echo_changes(outcome.changes)


def _echo_changes(changes: list[Any]) -> None:
    for c in changes:
        click.echo(f"{c.version}: {c.before} -> {c.after}")


@contextmanager
def _db_errors() -> Iterator[None]:
    """Turn an unreachable or unmigrated database into a clear error."""
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"cannot use the database ({type(exc).__name__}); is ITSM_DATABASE_URL right and `db upgrade` done?"
        ) from None
