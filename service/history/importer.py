"""One import run: open or resume the output, stream the source's pages through the row writer, checkpoint each page.

Nothing is held beyond one page of tickets and the digests of what was written, so memory stays flat from the
first ticket to the two-hundred-thousandth. After every page the output is flushed and fsynced, then the
checkpoint replaced; a run stopped anywhere (Ctrl-C, a crash, an outage that outlasts the retries) continues
from the last complete page when the same command runs again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service.history.checkpoint import Checkpoint
from service.history.progress import Progress
from service.history.records import HistoryError, HistorySource
from service.history.summary import Summary
from service.history.writer import DetectLanguage, RowWriter, Seen

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ImportResult:
    """How a run ended."""

    summary: Summary
    complete: bool  # the query's last page was reached
    resumed: bool
    stopped_by_limit: bool


def default_checkpoint(out: Path) -> Path:
    """`tickets.jsonl` -> `tickets.jsonl.checkpoint.json`."""
    return out.with_name(out.name + ".checkpoint.json")


def open_checkpoint(
    *, out: Path, checkpoint_path: Path, source: str, options: dict[str, Any], overwrite: bool
) -> Checkpoint | None:
    """The checkpoint a run continues, None to start afresh; HistoryError when the files belong to something else."""
    if overwrite:
        for path in (out, checkpoint_path):
            path.unlink(missing_ok=True)
        return None
    cp = Checkpoint.load(checkpoint_path)
    if cp is None:
        if out.exists() and out.stat().st_size > 0:
            raise HistoryError(
                f"{out} exists and has no checkpoint ({checkpoint_path.name}): pass --overwrite to replace it, "
                "or choose another --out"
            )
        return None
    why = cp.mismatch(source, options)
    if why:
        raise HistoryError(
            f"{checkpoint_path} belongs to another import ({why}): run the same command to continue it, "
            "or pass --overwrite to start over"
        )
    size = out.stat().st_size if out.exists() else -1
    if size < cp.bytes:
        raise HistoryError(
            f"{out} is shorter than its checkpoint says ({max(size, 0):,} < {cp.bytes:,} bytes): it was changed "
            "or moved; pass --overwrite to start over"
        )
    return cp


def run_import(
    source: HistorySource,
    *,
    out: Path,
    checkpoint_path: Path,
    checkpoint: Checkpoint | None,
    options: dict[str, Any],
    labels: list[str],
    limit: int | None = None,
    detect_language: DetectLanguage | None = None,
    progress: Progress | None = None,
    on_page: Callable[[Summary], None] | None = None,
) -> ImportResult:
    """Import until the query is exhausted or `limit` tickets are written in all (this and earlier runs)."""
    resumed = checkpoint is not None
    cp = checkpoint or Checkpoint(source=source.name, options=options, plan=source.plan)
    summary = Summary.from_dict(cp.summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as f:
        f.truncate(cp.bytes)  # a page written after the last checkpoint is written again
    seen = Seen.from_output(out, cp.bytes)
    if limit is not None and summary.written >= limit:
        return ImportResult(summary, complete=cp.done, resumed=resumed, stopped_by_limit=True)
    if progress is not None:
        progress.begin(total=source.total(), already_read=summary.read)
    log.debug("history_import_started", source=source.name, resumed=resumed, written=summary.written)
    stopped = False
    with out.open("ab") as f:
        writer = RowWriter(
            f, source=source.name, labels=labels, summary=summary, seen=seen, detect_language=detect_language
        )
        skip = cp.skip
        for page in source.pages(cp.cursor):
            next_cursor: dict[str, Any] | None = page.next_cursor
            next_skip, done = 0, page.done
            for i, ticket in enumerate(page.tickets):
                if i < skip:
                    continue
                writer.add(ticket)
                if limit is not None and summary.written >= limit and i + 1 < len(page.tickets):
                    # Stopped mid-page: a later run fetches this page again and skips what is done.
                    next_cursor, next_skip, done, stopped = page.cursor, i + 1, False, True
                    break
            skip = 0
            stopped = stopped or (limit is not None and summary.written >= limit)
            f.flush()
            os.fsync(f.fileno())
            cp.cursor, cp.skip, cp.done = next_cursor, next_skip, done
            cp.bytes = os.fstat(f.fileno()).st_size
            cp.summary = summary.to_dict()
            cp.save(checkpoint_path)
            if progress is not None:
                progress.update(summary)
            if on_page is not None:
                on_page(summary)
            if stopped or page.done:
                break
    if progress is not None:
        progress.close(summary)
    log.debug(
        "history_import_finished",
        source=source.name,
        read=summary.read,
        written=summary.written,
        skipped=summary.skipped_total,
        complete=cp.done,
    )
    return ImportResult(summary, complete=cp.done, resumed=resumed, stopped_by_limit=stopped)
