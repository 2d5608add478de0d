"""`itsm-triage history import | split`: the operator's resolved tickets as a training file, and a recent hold-out."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from service.domain.errors import PermanentUpstream, TransientUpstream
from service.history.records import HistoryError, HistorySource, parse_labels
from service.settings import Settings

SOURCES = click.Choice(["jira", "servicenow"])


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(history)


@click.group()
def history() -> None:
    """Import resolved tickets from Jira / ServiceNow as training data."""


def default_labels(settings: Settings, source: str) -> dict[str, str]:
    """Per source, the fields the write-back sets: the queue/category field and priority."""
    category = settings.jira.category_field if source == "jira" else "assignment_group"
    return {settings.category_label_field: category, "priority": "priority"}


def build_source(
    settings: Settings,
    source: str,
    plan: dict[str, Any],
    labels: dict[str, str],
    *,
    page_size: int,
    concurrency: int,
    skip_authors: tuple[str, ...],
    on_wait: Any,
    sleep: Callable[[float], None] = time.sleep,
) -> HistorySource:
    """The source reading through a retrying client with the service's own credentials."""
    from service.history.retry import RetryingReader

    if source == "jira":
        from service.history.jira import JiraHistory, jira_caller

        reader = RetryingReader(jira_caller(settings.jira), on_wait=on_wait, sleep=sleep)
        return JiraHistory(
            reader,
            plan,
            labels=labels,
            settings=settings.jira,
            page_size=page_size,
            concurrency=concurrency,
            skip_authors=skip_authors,
        )
    from service.history.servicenow import ServiceNowHistory, servicenow_caller

    reader = RetryingReader(servicenow_caller(settings.servicenow), on_wait=on_wait, sleep=sleep)
    return ServiceNowHistory(
        reader, plan, labels=labels, settings=settings.servicenow, page_size=page_size, skip_authors=skip_authors
    )


def _plan(source: str, query: str | None, since: date | None, projects: list[str]) -> dict[str, Any]:
    if source == "jira":
        from service.history.jira import jira_plan

        return jira_plan(query=query, since=since, projects=projects)
    if projects:
        raise HistoryError("--project is for Jira; filter ServiceNow incidents with --query")
    from service.history.servicenow import servicenow_plan

    return servicenow_plan(query=query, since=since)


def _peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@history.command("import")
@click.option("--source", required=True, type=SOURCES, help="Where the tickets are.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSONL file `train` reads.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Tickets resolved (Jira) / updated (ServiceNow) on or after this day [default: the last 365 days].",
)
@click.option(
    "--query",
    default=None,
    help="Which tickets: a JQL condition (default 'statusCategory = Done') or a ServiceNow encoded query "
    "(default 'stateIN6,7'); --since still bounds it.",
)
@click.option(
    "--label",
    "label_specs",
    multiple=True,
    metavar="NAME=FIELD",
    help="A label column and the field it comes from (repeat; replaces the defaults: Jira queue=<category field> "
    "priority=priority, ServiceNow queue=assignment_group priority=priority).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after this many tickets written.")
@click.option("--project", "projects", multiple=True, help="Jira project key(s) to import from (repeat).")
@click.option(
    "--skip-author",
    "skip_authors",
    multiple=True,
    help="Comments by this account (Jira account id or display name, ServiceNow user name) are never taken as "
    "the reply, e.g. an automation account (repeat).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Resume file [default: OUT.checkpoint.json].",
)
@click.option("--overwrite", is_flag=True, help="Start over: replace OUT and its checkpoint.")
@click.option("--page-size", type=click.IntRange(1, 500), default=100, show_default=True)
@click.option(
    "--concurrency", type=click.IntRange(1, 16), default=4, show_default=True, help="Jira comment reads at once."
)
@click.pass_obj
def import_cmd(
    settings: Settings,
    source: str,
    out: Path,
    since: datetime | None,
    query: str | None,
    label_specs: tuple[str, ...],
    limit: int | None,
    projects: tuple[str, ...],
    skip_authors: tuple[str, ...],
    checkpoint: Path | None,
    overwrite: bool,
    page_size: int,
    concurrency: int,
) -> None:
    """Stream resolved tickets (text, labels, first agent reply) into OUT; re-run the same command to resume."""
    from models.language import detect  # pure Python: no torch
    from service.history.importer import default_checkpoint, open_checkpoint, run_import
    from service.history.progress import Progress
    from service.logging import configure_logging

    configure_logging(settings)
    started = time.monotonic()
    day = since.date() if since else None
    if day and day > datetime.now(UTC).date():
        raise click.BadParameter(f"{day} is in the future", param_hint="--since")
    project_list = [p.strip() for spec in projects for p in spec.split(",") if p.strip()]
    checkpoint_path = checkpoint or default_checkpoint(out)
    try:
        labels = parse_labels(label_specs) if label_specs else default_labels(settings, source)
        options = {
            "base_url": settings.jira.base_url if source == "jira" else settings.servicenow.instance_url,
            "query": query,
            "since": day.isoformat() if day else None,
            "projects": project_list,
            "labels": labels,
            "skip_authors": sorted(skip_authors),
        }
        cp = (
            None
            if overwrite
            else open_checkpoint(
                out=out, checkpoint_path=checkpoint_path, source=source, options=options, overwrite=False
            )
        )
        plan = cp.plan if cp else _plan(source, query, day, project_list)
        progress = Progress(sys.stderr)

        def waited(exc: TransientUpstream, delay: float, attempt: int) -> None:
            progress.note(f"{exc} — waiting {delay:.0f} s (attempt {attempt})")

        src = build_source(
            settings,
            source,
            plan,
            labels,
            page_size=page_size,
            concurrency=concurrency,
            skip_authors=skip_authors,
            on_wait=waited,
        )
        if overwrite:  # only now that the new import can start
            open_checkpoint(out=out, checkpoint_path=checkpoint_path, source=source, options=options, overwrite=True)
    except HistoryError as exc:
        raise click.UsageError(str(exc)) from None
    if cp:
        done = "complete" if cp.done else "stopped"
        click.echo(f"continuing the {done} import in {out}: {cp.summary.get('written', 0):,} tickets written so far")
    else:
        click.echo(f"importing resolved tickets from {source} ({options['base_url']}) into {out}")
    click.echo(f"  query: {plan.get('jql') or plan['query'] + ' updated since ' + plan['since']}")
    click.echo("  labels: " + ", ".join(f"{n} <- {f}" for n, f in labels.items()))
    try:
        result = run_import(
            src,
            out=out,
            checkpoint_path=checkpoint_path,
            checkpoint=cp,
            options=options,
            labels=list(labels),
            limit=limit,
            detect_language=detect,
            progress=progress,
        )
    except HistoryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except PermanentUpstream as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.status in (401, 403):
            click.echo("check the credentials and that the account may read these tickets", err=True)
        sys.exit(2)
    except TransientUpstream as exc:
        click.echo(f"error: {exc} (still failing after retries)", err=True)
        click.echo(f"the checkpoint keeps what was written: run the same command again to continue {out}", err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: run the same command again to continue {out}", err=True)
        sys.exit(130)
    except OSError as exc:
        click.echo(f"error: cannot write {out} or its checkpoint: {exc}", err=True)
        sys.exit(2)
    finally:
        src.close()
    summary = result.summary
    if result.stopped_by_limit:
        click.echo(f"stopped at --limit {limit}: run again with a higher --limit (or none) to go on")
    elif result.complete:
        click.echo(f"done: every matching ticket is in {out} (a later run adds tickets resolved since)")
    for line in summary.render(labels):
        click.echo(line)
    click.echo(f"peak memory {_peak_rss_mib():.0f} MiB · {time.monotonic() - started:.0f} s")
    if summary.written:
        click.echo(f"next: itsm-triage history split --data {out} --recent 0.15")


@history.command("split")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--recent", default=0.15, show_default=True, help="Share of the newest tickets to hold out.")
@click.option("--train-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--test-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def split_cmd(data: Path, recent: float, train_out: Path | None, test_out: Path | None) -> None:
    """Hold out the newest tickets of an import (its last lines) for `evaluate`; the rest is for `train`."""
    from service.history.split import split_recent

    stem = data.with_suffix("")
    train_path = train_out or stem.with_name(stem.name + ".train.jsonl")
    test_path = test_out or stem.with_name(stem.name + ".recent.jsonl")
    try:
        result = split_recent(data, train_out=train_path, test_out=test_path, fraction=recent)
    except HistoryError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{result.train:,} older tickets -> {train_path}")
    click.echo(f"{result.test:,} most recent tickets -> {test_path}")
    click.echo(f"next: itsm-triage train --data {train_path} --out var/adapters/first")
