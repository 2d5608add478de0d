"""The adapter registry: register an adapter's files, and every status change (shadow, promote, retire, rollback)
as one transaction with its audit row. Shared by the CLI, the review UI's Adapters page, the retrain and the checks.

The database keeps the invariants (partial unique indexes): at most one live and one shadow adapter. Changing the
live adapter needs no redeploy: workers poll the registry between batches (workers/adapter_sync.py).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.learning import Adapter, AdapterStatus
from service.domain.tables import utcnow
from service.learning import store
from service.review import audit
from service.settings import Settings

log = structlog.get_logger(__name__)

META = "triage.json"  # models/adapter.py's metadata file: label sets, base model, training data


class RegistryError(ValueError):
    """A registry action that cannot be done, with the reason (shown by the CLI and the Adapters page)."""

    def __init__(self, detail: str, *, status: int = 409) -> None:
        super().__init__(detail)
        self.detail, self.status = detail, status


@dataclass(frozen=True)
class Change:
    """One status change: the adapter, its status before and after."""

    version: str
    before: str
    after: str


def read_meta(directory: Path) -> dict[str, Any]:
    """An adapter directory's triage.json (RegistryError when it is not an adapter)."""
    path = Path(directory) / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{directory}: not a triage adapter (no {META})", status=422) from None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: unreadable ({exc})", status=422) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("fields"), dict):
        raise RegistryError(f"{path}: no label sets ('fields')", status=422)
    return meta


def list_adapters(session: Session) -> list[Adapter]:
    """Every registered adapter, newest first."""
    return list(session.exec(select(Adapter).order_by(col(Adapter.id).desc())).all())


def current(session: Session, status: AdapterStatus, *, lock: bool = False) -> Adapter | None:
    """The live (or shadow) adapter, if any."""
    query = select(Adapter).where(col(Adapter.status) == status)
    return session.exec(query.with_for_update() if lock else query).first()


def by_version(session: Session, version: str, *, lock: bool = False) -> Adapter:
    """The adapter of a version ('v3' or '3'); RegistryError (404) when there is none."""
    name = version.strip()
    name = f"v{name}" if name.isdigit() else name
    query = select(Adapter).where(col(Adapter.version) == name)
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is None:
        raise RegistryError(f"no adapter {name!r} in the registry (`itsm-triage adapters list`)", status=404)
    return row


def register(
    engine: Engine,
    settings: Settings,
    directory: Path,
    *,
    actor: str,
    status: AdapterStatus = AdapterStatus.candidate,
    parent_id: int | None = None,
    data: dict[str, Any] | None = None,
    via: str | None = None,
    reason: str | None = None,
) -> Adapter:
    """Store an adapter directory's files and add it to the registry (the same files again: the existing row)."""
    meta = read_meta(directory)
    archive = store.pack(Path(directory))
    with session_scope(engine) as session:
        stored = store.put(session, settings, archive)
        existing = session.exec(select(Adapter).where(col(Adapter.sha256) == stored.sha256)).first()
        if existing is not None:
            return existing
        now = utcnow()
        row = Adapter(
            version=f"new-{uuid.uuid4().hex[:12]}",
            status=status,
            base_model=str(meta.get("base_model") or settings.model.base)[:300],
            model_version=str(meta.get("model_version") or "")[:300],
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            storage=stored.storage,
            fields=dict(meta["fields"]),
            trained_at=_parse_time(meta.get("trained_at")),
            data={**dict(meta.get("data") or {}), **(data or {})},
            training={**dict(meta.get("training") or {}), "validation": _validation(meta)},
            parent_id=parent_id,
            promoted_via=via if status == AdapterStatus.live else None,
            live_since=now if status == AdapterStatus.live else None,
            reason=reason,
            created_by=actor[:200],
            status_changed_by=actor[:200],
        )
        session.add(row)
        session.flush()
        row.version = f"v{row.id}"
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action="adapter_registered",
            target_type="adapter",
            target_id=row.version,
            after={"status": row.status, "sha256": row.sha256, "base_model": row.base_model, "reason": reason},
        )
    log.info("adapter_registered", version=row.version, status=row.status, bytes=row.size_bytes, actor=actor)
    return row


def bootstrap(engine: Engine, settings: Settings, directory: Path) -> Adapter:
    """The live adapter; on first use (an empty registry) the configured adapter (the shipped default) becomes v1,
    live. Several workers starting together agree on one (the unique live index decides)."""
    with session_scope(engine) as session:
        live = current(session, AdapterStatus.live)
        if live is not None:
            return live
        if session.exec(select(Adapter.id)).first() is not None:
            raise RegistryError("the registry has adapters but none is live: promote one (`itsm-triage adapters`)")
    try:
        row = register(
            engine,
            settings,
            directory,
            actor="service:bootstrap",
            status=AdapterStatus.live,
            via="bootstrap",
            reason="the configured adapter, registered on first use",
        )
    except IntegrityError:  # another process registered its copy first
        with session_scope(engine) as session:
            live = current(session, AdapterStatus.live)
        if live is None:
            raise
        return live
    return row


def ensure_live(engine: Engine, settings: Settings, directory: Path) -> Adapter:
    """The live adapter, as `bootstrap` finds or makes it; and when ITSM_MODEL__ADAPTER names an adapter the registry
    has never seen, that one goes live (the previous one stays its predecessor, for rollback). Changing the setting
    still deploys an adapter; an adapter the registry already knows never overrides later promotions."""
    live = bootstrap(engine, settings, directory)
    if settings.model.adapter in (None, "", "default"):
        return live
    sha = store.digest(store.pack(Path(directory)))
    with session_scope(engine) as session:
        if session.exec(select(Adapter.id).where(col(Adapter.sha256) == sha)).first() is not None:
            return live
    row = register(engine, settings, directory, actor="service:config", reason="named by ITSM_MODEL__ADAPTER")
    try:
        promote(engine, row.version, actor="service:config", via="config", force=True,
                reason="ITSM_MODEL__ADAPTER names an adapter the registry had not seen")  # fmt: skip
    except (RegistryError, IntegrityError):  # another process promoted it first
        pass
    with session_scope(engine) as session:
        return current(session, AdapterStatus.live) or live


def promote(
    engine: Engine,
    version: str,
    *,
    actor: str,
    via: str = "admin",
    force: bool = False,
    reason: str | None = None,
    base_model: str | None = None,
) -> list[Change]:
    """Make an adapter live; the live one is retired (and remembered as its predecessor, for rollback). An admin
    promoting an adapter that did not pass the gate must say `force`."""
    with session_scope(engine) as session:
        target = by_version(session, version, lock=True)
        if target.status == AdapterStatus.live:
            raise RegistryError(f"{target.version} is already live")
        if via == "admin" and target.gate != "passed" and not force:
            why = f": {target.reason}" if target.reason else ""
            raise RegistryError(
                f"{target.version} has not passed the gate{why}. Promote it anyway only with --force "
                "(the Adapters page: 'override the gate')"
            )
        if base_model is not None and target.base_model != base_model:
            raise RegistryError(
                f"{target.version} was trained on {target.base_model!r}, but the workers run {base_model!r}"
            )
        changes = []
        old = current(session, AdapterStatus.live, lock=True)
        if old is not None:
            changes.append(_move(session, old, AdapterStatus.retired, actor, f"replaced by {target.version}"))
            session.flush()  # the one-live index is checked per statement
        target.replaced_id = old.id if old is not None else target.replaced_id
        target.promoted_via = via
        target.live_since = utcnow()
        changes.append(_move(session, target, AdapterStatus.live, actor, reason or f"promoted ({via})"))
    log.info("adapter_promoted", version=target.version, via=via, actor=actor)
    return changes


def rollback(engine: Engine, *, actor: str, reason: str, via: str = "admin") -> list[Change]:
    """Retire the live adapter and make its predecessor (the one it replaced) live again."""
    with session_scope(engine) as session:
        live = current(session, AdapterStatus.live, lock=True)
        if live is None:
            raise RegistryError("no live adapter to roll back")
        previous = session.get(Adapter, live.replaced_id) if live.replaced_id else None
        if previous is None:
            raise RegistryError(f"{live.version} replaced no earlier adapter: there is nothing to roll back to")
        changes = [_move(session, live, AdapterStatus.retired, actor, f"rolled back ({via}): {reason}")]
        session.flush()
        previous.promoted_via = "rollback"
        previous.live_since = utcnow()
        changes.append(_move(session, previous, AdapterStatus.live, actor, f"restored by a rollback of {live.version}"))
    log.warning("adapter_rolled_back", retired=live.version, live=previous.version, via=via, reason=reason)
    return changes


def start_shadow(engine: Engine, version: str, *, actor: str, reason: str | None = None) -> list[Change]:
    """Run an adapter in shadow (workers predict with it beside the live one); a previous shadow goes back to
    being a candidate."""
    with session_scope(engine) as session:
        target = by_version(session, version, lock=True)
        if target.status == AdapterStatus.live:
            raise RegistryError(f"{target.version} is live; only another adapter can shadow it")
        if target.status == AdapterStatus.shadow:
            raise RegistryError(f"{target.version} is already in shadow")
        changes = []
        old = current(session, AdapterStatus.shadow, lock=True)
        if old is not None:
            changes.append(_move(session, old, AdapterStatus.candidate, actor, f"shadow replaced by {target.version}"))
            session.flush()
        changes.append(_move(session, target, AdapterStatus.shadow, actor, reason or "shadowing the live adapter"))
    return changes


def retire(engine: Engine, version: str, *, actor: str, reason: str) -> list[Change]:
    """Turn a candidate or shadow adapter down (the live one leaves only by promotion or rollback)."""
    with session_scope(engine) as session:
        target = by_version(session, version, lock=True)
        if target.status == AdapterStatus.live:
            raise RegistryError(f"{target.version} is live: promote another adapter or roll back instead")
        if target.status == AdapterStatus.retired:
            raise RegistryError(f"{target.version} is already retired")
        return [_move(session, target, AdapterStatus.retired, actor, reason)]


def record_gate(engine: Engine, adapter_id: int, *, passed: bool, report: dict[str, Any], reason: str) -> None:
    """Store the gate's verdict, figures and reason on a candidate."""
    with session_scope(engine) as session:
        row = session.get(Adapter, adapter_id)
        if row is None:
            raise RegistryError(f"adapter #{adapter_id} is gone", status=404)
        row.gate = "passed" if passed else "failed"
        row.report = report
        row.reason = reason
        session.add(row)
        audit.record(
            session,
            actor="service:gate",
            action="adapter_gated",
            target_type="adapter",
            target_id=row.version,
            after={"gate": row.gate, "reason": reason[:2000]},
        )


def record_report(engine: Engine, adapter_id: int, key: str, value: dict[str, Any]) -> None:
    """Add a section (e.g. the shadow comparison) to an adapter's report."""
    with session_scope(engine) as session:
        row = session.get(Adapter, adapter_id, with_for_update=True)
        if row is not None:
            row.report = {**(row.report or {}), key: value}
            session.add(row)


def _move(session: Session, row: Adapter, status: AdapterStatus, actor: str, reason: str) -> Change:
    """Change a row's status with its audit row, in the caller's transaction."""
    before = row.status
    row.status = status
    row.reason = reason[:4000]
    row.status_changed_at = utcnow()
    row.status_changed_by = actor[:200]
    session.add(row)
    audit.record(
        session,
        actor=actor,
        action=f"adapter_{status.value}",
        target_type="adapter",
        target_id=row.version,
        before={"status": before},
        after={"status": status.value, "reason": reason[:2000]},
    )
    return Change(row.version, str(before), status.value)


def _validation(meta: dict[str, Any]) -> dict[str, Any]:
    """The ensemble's figures on the adapter's own validation split, per field (from triage.json)."""
    out = {}
    for name, reports in dict(meta.get("validation") or {}).items():
        if isinstance(reports, dict) and isinstance(reports.get("ensemble"), dict):
            out[name] = reports["ensemble"]
    return out


def _parse_time(stamp: Any) -> datetime | None:
    if not stamp:
        return None
    try:
        value = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
