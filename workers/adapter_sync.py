"""The registry's live and shadow adapters in a worker process, picked up between batches without a restart.

Like the memory sync (workers/memory_sync.py), each process polls the database (`learning.adapter_sync_s`) from the
thread that runs the model, between batches, so every worker of a fleet converges on what the registry says with no
message between them. A new adapter's files come from the registry by hash into the local cache
(service/learning/store.py) and load onto the base model the process already holds (peft named adapters): the base
weights are never loaded twice, and the old adapter is dropped once the new one is in place. A load that fails
leaves the current adapter serving and is retried at the next poll.

Shadow predictions are stored here too: the shadow adapter's labels for a batch, after the live triages they
belong to are committed; they never reach a delivery.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.db import session_scope
from service.domain.learning import Adapter, AdapterStatus, ShadowPrediction
from service.domain.schemas import TriageResult
from service.domain.tables import Triage
from service.learning import registry, store
from service.settings import Settings
from workers.model_backend import ModelTriager, model_config, warn_label_maps
from workers.store import Work

log = structlog.get_logger(__name__)

RETRY_S = 60.0  # a failed load is retried this much later at the soonest


@dataclass
class Loaded:
    """A registry adapter loaded in this process."""

    adapter: Adapter
    triager: ModelTriager


class AdapterSync:
    """This process's live and shadow adapters, following the registry."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        default_adapter: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.default_adapter = default_adapter
        self.clock = clock
        self.interval_s = settings.learning.adapter_sync_s
        self.live: Loaded | None = None
        self.shadow: Loaded | None = None
        self._due = 0.0

    def start(self) -> ModelTriager:
        """Load the registry's live adapter (the configured one becomes v1 on first use) and any shadow adapter."""
        adapter = registry.ensure_live(self.engine, self.settings, self._configured())
        self.live = self._load(adapter, beside=None)
        self._due = self.clock() + self.interval_s
        try:
            self._follow_shadow(self._current(AdapterStatus.shadow))
        except Exception as exc:  # noqa: BLE001  the shadow is optional: the live adapter serves regardless
            log.error("shadow_adapter_load_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        return self.live.triager

    def refresh(self) -> bool:
        """When due, load what the registry names if it changed; True when the live adapter was swapped."""
        if self.live is None or self.interval_s <= 0 or self.clock() < self._due:
            return False
        self._due = self.clock() + self.interval_s
        swapped = False
        try:
            live, shadow = self._current(AdapterStatus.live), self._current(AdapterStatus.shadow)
            if live is not None and live.id != self.live.adapter.id:
                self._swap(live)
                swapped = True
            self._follow_shadow(shadow)
        except Exception as exc:  # noqa: BLE001  keep serving with what is loaded; retry later
            self._due = self.clock() + max(self.interval_s, RETRY_S)
            log.error("adapter_sync_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        return swapped

    def shadow_triager(self) -> tuple[int, ModelTriager] | None:
        """(registry id, triager) of the shadow adapter, if one is loaded."""
        return (self.shadow.adapter.id or 0, self.shadow.triager) if self.shadow is not None else None

    def _swap(self, adapter: Adapter) -> None:
        """Make `adapter` this process's live one; the previous one's weights are dropped."""
        assert self.live is not None
        started = time.perf_counter()
        old = self.live
        if self.shadow is not None and self.shadow.adapter.id == adapter.id:  # the shadow was promoted: reuse it
            new, self.shadow = self._rewrap(self.shadow, adapter), None
        else:
            new = self._load(adapter, beside=old.triager)
        self.live = new
        old.triager.unload()
        log.info(
            "adapter_swapped",
            old=old.adapter.version,
            new=adapter.version,
            seconds=round(time.perf_counter() - started, 2),
        )

    def _follow_shadow(self, adapter: Adapter | None) -> None:
        """Load, replace or drop the shadow adapter as the registry says."""
        if adapter is None or (self.live is not None and adapter.id == self.live.adapter.id):
            if self.shadow is not None:
                self.shadow.triager.unload()
                log.info("shadow_adapter_dropped", version=self.shadow.adapter.version)
                self.shadow = None
            return
        if self.shadow is not None and self.shadow.adapter.id == adapter.id:
            return
        if self.shadow is not None:
            self.shadow.triager.unload()
        assert self.live is not None
        self.shadow = self._load(adapter, beside=self.live.triager)
        log.info("shadow_adapter_loaded", version=adapter.version)

    def _load(self, adapter: Adapter, beside: ModelTriager | None) -> Loaded:
        """The adapter's files from the cache (fetched by hash when absent), on the base `beside` already holds."""
        from models.adapter import AdapterError
        from models.inference import Triager as LLMTriager

        directory = store.materialize(self.engine, self.settings, adapter)
        cfg = model_config(self.settings, adapter=str(directory))
        llm = None
        if beside is not None:
            try:
                llm = LLMTriager.load_sharing(beside.llm, cfg, adapter.version)
            except AdapterError as exc:  # another base model: load it (twice the memory until the old one goes)
                log.warning("adapter_base_differs", version=adapter.version, detail=str(exc))
        if llm is None:
            llm = LLMTriager.load(cfg)
        warn_label_maps(self.settings, dict(getattr(llm, "meta", {}).get("fields") or {}))
        return Loaded(adapter, self._wrap(llm, adapter))

    def _rewrap(self, loaded: Loaded, adapter: Adapter) -> Loaded:
        return Loaded(adapter, self._wrap(loaded.triager.llm, adapter))

    def _wrap(self, llm: Any, adapter: Adapter) -> ModelTriager:
        since = ((adapter.data or {}).get("retrain") or {}).get("memory_since")
        return ModelTriager(
            llm, draft_replies=self.settings.model.draft_replies, adapter_version=adapter.version, memory_since=since
        )

    def _current(self, status: AdapterStatus) -> Adapter | None:
        with session_scope(self.engine) as session:
            return registry.current(session, status)

    def _configured(self) -> Path:
        if self.default_adapter is not None:
            return self.default_adapter
        from models.adapter import resolve_adapter

        return resolve_adapter(self.settings.model.adapter)


def store_shadow(engine: Engine, work: Sequence[Work], adapter_id: int, results: Sequence[TriageResult]) -> int:
    """Store a shadow adapter's labels beside the live triages of the same batch (already committed); rows stored."""
    keys = {(w.ticket.id, w.ticket.source_version): r for w, r in zip(work, results, strict=True)}
    with Session(engine) as session:
        triages = session.exec(
            select(Triage.id, Triage.ticket_id, Triage.source_version).where(
                col(Triage.ticket_id).in_([w.ticket.id for w in work])
            )
        ).all()
    rows: list[dict[str, Any]] = [
        {
            "triage_id": int(tid or 0),
            "ticket_id": ticket_id,
            "adapter_id": adapter_id,
            "predictions": {k: v.model_dump() for k, v in keys[(ticket_id, version)].predictions.items()},
        }
        for tid, ticket_id, version in triages
        if (ticket_id, version) in keys
    ]
    try:
        with session_scope(engine) as session:
            session.add_all([ShadowPrediction.model_validate(r) for r in rows])
    except IntegrityError:  # a redelivered batch: store what is new, one by one
        stored = 0
        for r in rows:
            try:
                with session_scope(engine) as session:
                    session.add(ShadowPrediction.model_validate(r))
                stored += 1
            except IntegrityError:
                continue
        return stored
    return len(rows)
