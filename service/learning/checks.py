"""The periodic registry check (the worker's beat, or `itsm-triage adapters check`): roll a degrading live adapter
back, then compare the shadow adapter with the live one on agents' verdicts and promote or retire it."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Engine

from service.db import session_scope
from service.domain.learning import Adapter, AdapterStatus
from service.learning import lease, registry, rollback, shadow
from service.settings import Settings

log = structlog.get_logger(__name__)

LEASE = "registry-check"
# How an adapter became live decides whether the automatic rollback judges it: not the first one (nothing to go
# back to) and not one a rollback restored (that would undo the rollback on the next check).
JUDGED = ("gate", "shadow", "admin", "config")


@dataclass
class CheckReport:
    """What one check found and did."""

    rollback: rollback.Check | None = None
    shadow: shadow.Comparison | None = None
    changes: list[registry.Change] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary (CLI)."""
        out = []
        if self.rollback is not None:
            out.append(f"rollback check of {self.rollback.live}: {self.rollback.decision} ({self.rollback.reason})")
        if self.shadow is not None:
            s = self.shadow
            out.append(f"shadow {s.shadow} vs {s.live}: {s.decision} ({s.reason})")
        out += [f"{c.version}: {c.before} -> {c.after}" for c in self.changes]
        return out or ["no live adapter with a predecessor and no shadow adapter: nothing to check"]


def run_checks(engine: Engine, settings: Settings, *, holder: str = "service:check") -> CheckReport:
    """One check; a no-op while another process runs one."""
    report = CheckReport()
    if not lease.claim(engine, LEASE, holder, 600):
        return report
    try:
        _rollback(engine, settings, report)
        _shadow(engine, settings, report)
    finally:
        lease.release(engine, LEASE, holder)
    return report


def _rollback(engine: Engine, settings: Settings, report: CheckReport) -> None:
    cfg = settings.learning
    with session_scope(engine) as session:
        live = registry.current(session, AdapterStatus.live)
        previous = session.get(Adapter, live.replaced_id) if live is not None and live.replaced_id else None
        if live is None or previous is None or live.promoted_via not in JUDGED:
            return
        report.rollback = rollback.check(session, live, previous, cfg)
    registry.record_report(engine, live.id or 0, "rollback_check", report.rollback.as_dict())
    if report.rollback.decision == "rollback" and cfg.auto_rollback:
        report.changes += registry.rollback(
            engine, actor="service:rollback", reason=report.rollback.reason, via="automatic"
        )


def _shadow(engine: Engine, settings: Settings, report: CheckReport) -> None:
    cfg = settings.learning
    with session_scope(engine) as session:
        live = registry.current(session, AdapterStatus.live)
        candidate = registry.current(session, AdapterStatus.shadow)
        if live is None or candidate is None:
            return
        report.shadow = shadow.compare(session, candidate, live, cfg)
    registry.record_report(engine, candidate.id or 0, "shadow", report.shadow.as_dict())
    if cfg.shadow_decision != "auto":
        return
    if report.shadow.decision == "promote":
        report.changes += registry.promote(
            engine, candidate.version, actor="service:shadow", via="shadow", reason=report.shadow.reason
        )
    elif report.shadow.decision == "retire":
        report.changes += registry.retire(
            engine, candidate.version, actor="service:shadow", reason=report.shadow.reason
        )
    if report.changes:
        log.info("registry_checked", changes=[f"{c.version}:{c.after}" for c in report.changes])
