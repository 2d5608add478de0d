"""Keep the stored knowledge base in step with its sources: adds, edits, unpublished and deleted articles.

A sync claims its source with a lease (a beat sync and a CLI sync never overlap), applies changed articles in
small committed batches (an interrupted sync keeps what it did and the next one re-reads from the old cursor),
then removes what the source's complete listing no longer has. It never removes what it could not read: no
listing, or a listing with unreadable parts, removes nothing there; and a listing that would remove more than
`kb.max_delete_fraction` of the source's articles (an emptied result, a permission change) removes none and
says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.errors import UpstreamError
from service.domain.knowledge import KbArticle, KbPassage, KbSyncState
from service.domain.tables import utcnow
from service.knowledge.index import index_passages, passage_terms, unindex_passages
from service.knowledge.source import ArticleRecord, KnowledgeSource
from service.knowledge.text import html_to_text, split_passages, ts_config
from service.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 50  # articles per commit


@dataclass
class SyncReport:
    """What one sync of one source did."""

    source: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    articles: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    busy: bool = False  # another sync held the source's lease; nothing was done

    @property
    def ok(self) -> bool:
        """True when every part of the source was read and applied."""
        return not self.errors and not self.busy

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (CLI, task logs)."""
        return {
            "source": self.source,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "articles": self.articles,
            "retries": self.retries,
            "errors": list(self.errors),
            "busy": self.busy,
        }


def make_sources(settings: Settings) -> list[KnowledgeSource]:
    """The knowledge bases the settings configure (ServiceNow Knowledge, Confluence), in that order."""
    from service.knowledge.confluence import ConfluenceKnowledge
    from service.knowledge.servicenow import ServiceNowKnowledge

    sources: list[KnowledgeSource] = []
    if settings.kb.servicenow_enabled:
        sources.append(ServiceNowKnowledge(settings))
    if settings.kb.confluence_url or settings.kb.confluence_spaces:
        sources.append(ConfluenceKnowledge(settings))
    return sources


def _claim(engine: Engine, name: str, *, now: datetime, lease: timedelta) -> bool:
    """Take the source's lease (creating its state row on first use); False while another sync holds it."""
    try:
        with session_scope(engine) as session:
            if session.get(KbSyncState, name) is None:
                session.add(KbSyncState(source=name))
    except IntegrityError:
        pass  # another sync created it at the same moment; the conditional update below decides
    with session_scope(engine) as session:
        result = session.execute(
            update(KbSyncState)
            .where(
                col(KbSyncState.source) == name,
                (col(KbSyncState.lease_until).is_(None)) | (col(KbSyncState.lease_until) < now),
            )
            .values(lease_until=now + lease, last_started_at=now)
        )
        return bool(getattr(result, "rowcount", 0))


def _remove(session: Session, article: KbArticle) -> None:
    """Delete an article and its passages (and their index entries)."""
    ids = [i for i in session.exec(select(KbPassage.id).where(KbPassage.article_id == article.id)).all() if i]
    unindex_passages(session, ids)
    session.execute(delete(KbPassage).where(col(KbPassage.article_id) == article.id))
    session.delete(article)


def apply_record(session: Session, source: str, record: ArticleRecord, *, now: datetime) -> str | None:
    """Store one record: 'added', 'updated', 'removed', or None when there was nothing to do."""
    article = session.exec(
        select(KbArticle).where(KbArticle.source == source, KbArticle.external_id == record.external_id)
    ).first()
    if not record.published:
        if article is None:
            return None
        _remove(session, article)
        return "removed"
    outcome = "updated"
    if article is None:
        article = KbArticle(source=source, external_id=record.external_id)
        outcome = "added"
    else:
        ids = [i for i in session.exec(select(KbPassage.id).where(KbPassage.article_id == article.id)).all() if i]
        unindex_passages(session, ids)
        session.execute(delete(KbPassage).where(col(KbPassage.article_id) == article.id))
    text = html_to_text(record.html)
    article.number = record.number[:100]
    article.collection = record.collection[:200]
    article.title = record.title[:1000]
    article.url = (record.url or "")[:2000] or None
    article.language = record.language[:16]
    article.text = text
    article.version = record.version[:100]
    article.updated_at_source = record.updated_at
    article.synced_at = now
    session.add(article)
    session.flush()
    assert article.id is not None
    passages = [
        KbPassage(
            article_id=article.id,
            position=i,
            title=article.title,
            text=chunk,
            language=article.language,
            ts_config=ts_config(article.language),
        )
        for i, chunk in enumerate(split_passages(text))
    ]
    for p in passages:
        p.n_terms = passage_terms(p)
        session.add(p)
    session.flush()
    index_passages(session, passages)
    return outcome


def _batches(records: Iterator[ArticleRecord], size: int) -> Iterator[list[ArticleRecord]]:
    batch: list[ArticleRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def sync_source(
    engine: Engine,
    settings: Settings,
    source: KnowledgeSource,
    *,
    clock: Callable[[], datetime] = utcnow,
    allow_mass_removal: bool = False,
) -> SyncReport:
    """One sync of one source; errors are reported (and recorded on its state row), never raised."""
    report = SyncReport(source=source.name)
    lease = timedelta(seconds=settings.worker.lease_s)
    if not _claim(engine, source.name, now=clock(), lease=lease):
        report.busy = True
        log.info("kb_sync_skipped", source=source.name, reason="another sync holds the lease")
        return report
    with session_scope(engine) as session:
        state = session.get(KbSyncState, source.name)
        cursor = state.cursor if state else None
        known = {
            ext: version
            for ext, version in session.exec(
                select(KbArticle.external_id, KbArticle.version).where(KbArticle.source == source.name)
            ).all()
        }
    read_all = False
    try:
        for batch in _batches(source.changed(cursor, known), BATCH):
            with session_scope(engine) as session:
                for record in batch:
                    outcome = apply_record(session, source.name, record, now=clock())
                    if outcome is not None:
                        setattr(report, outcome, getattr(report, outcome) + 1)
                session.execute(  # still working: keep the lease
                    update(KbSyncState)
                    .where(col(KbSyncState.source) == source.name)
                    .values(lease_until=clock() + lease)
                )
        read_all = True
        _remove_missing(engine, settings, source, report, allow_mass_removal=allow_mass_removal)
    except UpstreamError as exc:
        report.errors.append(str(exc))
    except Exception as exc:  # recorded on the state row and in the report; the next sync retries
        report.errors.append(f"{type(exc).__name__}: {exc}")
        log.exception("kb_sync_crashed", source=source.name)
    report.retries = getattr(getattr(source, "reader", None), "retries", 0)
    _finish(engine, source, report, cursor=source.next_cursor() if read_all else cursor, now=clock())
    return report


def _remove_missing(
    engine: Engine, settings: Settings, source: KnowledgeSource, report: SyncReport, *, allow_mass_removal: bool
) -> None:
    """Remove stored articles the complete listing lacks, within the bounds that protect against bad listings."""
    listing = source.listing()
    report.errors.extend(listing.errors)
    with session_scope(engine) as session:
        stored = session.exec(select(KbArticle).where(KbArticle.source == source.name)).all()
        missing = [
            a
            for a in stored
            if a.external_id not in listing.ids and (listing.collections is None or a.collection in listing.collections)
        ]
        bound = max(1.0, settings.kb.max_delete_fraction * len(stored))
        if len(missing) > bound and not allow_mass_removal:
            report.errors.append(
                f"the listing lacks {len(missing)} of {len(stored)} stored articles; none removed "
                f"(more than ITSM_KB__MAX_DELETE_FRACTION={settings.kb.max_delete_fraction}: check the account's "
                f"read access, or run `itsm-triage kb sync --allow-mass-removal`)"
            )
            log.warning("kb_mass_removal_refused", source=source.name, missing=len(missing), stored=len(stored))
            return
        for article in missing:
            _remove(session, article)
        report.removed += len(missing)


def _finish(engine: Engine, source: KnowledgeSource, report: SyncReport, *, cursor: str | None, now: datetime) -> None:
    """Record the outcome on the state row and release the lease."""
    with session_scope(engine) as session:
        count = session.exec(select(func.count()).select_from(KbArticle).where(KbArticle.source == source.name)).one()
        report.articles = int(count)
        state = session.get(KbSyncState, source.name) or KbSyncState(source=source.name)
        state.cursor = cursor
        state.lease_until = None
        state.articles = report.articles
        state.added_total += report.added
        state.updated_total += report.updated
        state.removed_total += report.removed
        if report.errors:
            state.errors_total += 1
            state.last_error = "; ".join(report.errors)[:4000]
            state.last_error_at = now
        else:
            state.last_success_at = now
            state.last_error = None
        session.add(state)
    event = "kb_sync_completed" if report.ok else "kb_sync_failed"
    log.info(event, **report.as_dict())


def sync_all(
    engine: Engine,
    settings: Settings,
    sources: list[KnowledgeSource] | None = None,
    *,
    allow_mass_removal: bool = False,
) -> list[SyncReport]:
    """Sync every configured source in turn (one failing source does not stop the others)."""
    reports = []
    for source in make_sources(settings) if sources is None else sources:
        try:
            reports.append(sync_source(engine, settings, source, allow_mass_removal=allow_mass_removal))
        finally:
            source.close()
    return reports
