"""The registry as people read it: one view per adapter, the same for `itsm-triage adapters list` and the review
UI's Adapters page (figures side by side: the gate's per-field macro-F1 and ECE, the shadow comparison)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.learning import Adapter
from service.learning import registry


@dataclass
class FieldFigures:
    """One field at the gate: live vs candidate on the held-out tickets."""

    field: str
    n: int
    live_f1: float
    candidate_f1: float
    margin: float
    lower: float
    upper: float
    live_ece: float
    candidate_ece: float
    llm_live_f1: float | None = None
    llm_candidate_f1: float | None = None


@dataclass
class AdapterView:
    """One registry row for display."""

    version: str
    status: str
    gate: str | None
    trained: str
    reviewed: int
    holdout: int
    base_model: str
    size_mb: float
    changed: str
    reason: str
    parent: str | None
    replaced: str | None
    promoted_via: str | None
    new_labels: dict[str, list[str]]
    validation: dict[str, Any]
    gate_fields: list[FieldFigures] = field(default_factory=list)
    confidence: float | None = None
    replies: dict[str, Any] | None = None
    shadow: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    data: dict[str, Any] | None = None

    @property
    def figures(self) -> str:
        """The gate's figures in one line (or the adapter's own validation figures when it was not gated)."""
        if self.gate_fields:
            return "; ".join(
                f"{f.field} F1 {f.live_f1:.3f}->{f.candidate_f1:.3f} ({f.margin:+.3f}) ECE {f.live_ece:.3f}->"
                f"{f.candidate_ece:.3f}"
                for f in self.gate_fields
            )
        if self.validation:
            return "validation " + "; ".join(
                f"{k} F1 {float(v.get('macro_f1', 0)):.3f}" for k, v in self.validation.items()
            )
        return ""

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON (the report and training-data details only with `full`)."""
        keys = ("version", "status", "gate", "trained", "reviewed", "holdout", "base_model", "size_mb", "changed",
                "reason", "parent", "replaced", "promoted_via", "new_labels", "figures")  # fmt: skip
        out = {k: getattr(self, k) for k in keys}
        if full:
            out.update(report=self.report, data=self.data, shadow=self.shadow, rollback=self.rollback)
        return out


def rows(engine: Engine) -> list[AdapterView]:
    """Every adapter, newest first."""
    with Session(engine) as session:
        adapters = registry.list_adapters(session)
    versions = {a.id: a.version for a in adapters}
    return [view(a, versions) for a in adapters]


def one(engine: Engine, version: str) -> AdapterView:
    """One adapter (RegistryError when unknown)."""
    with Session(engine) as session:
        adapter = registry.by_version(session, version)
        versions = {a.id: a.version for a in registry.list_adapters(session)}
    return view(adapter, versions)


def view(a: Adapter, versions: dict[int | None, str]) -> AdapterView:
    """An adapter row as a view."""
    report = a.report or {}
    stats = (a.data or {}).get("retrain") or {}
    gate_fields = [
        FieldFigures(
            field=name,
            n=int(m.get("n", 0)),
            live_f1=float(m["live"]["macro_f1"]),
            candidate_f1=float(m["candidate"]["macro_f1"]),
            margin=float(m["macro_f1_margin"]),
            lower=float(m["macro_f1_margin_lower"]),
            upper=float(m["macro_f1_margin_upper"]),
            live_ece=float(m["live"]["ece"]),
            candidate_ece=float(m["candidate"]["ece"]),
            llm_live_f1=(m.get("live_llm_only") or {}).get("macro_f1"),
            llm_candidate_f1=(m.get("candidate_llm_only") or {}).get("macro_f1"),
        )
        for name, m in (report.get("fields") or {}).items()
        if isinstance(m, dict) and "live" in m
    ]
    by = f" by {a.status_changed_by}" if a.status_changed_by else ""
    return AdapterView(
        version=a.version,
        status=str(a.status),
        gate=a.gate,
        trained=a.trained_at.strftime("%Y-%m-%d %H:%M") if a.trained_at else "-",
        reviewed=int(stats.get("reviewed") or 0),
        holdout=int(stats.get("holdout") or 0),
        base_model=a.base_model,
        size_mb=round(a.size_bytes / 1e6, 1),
        changed=f"{a.status_changed_at:%Y-%m-%d %H:%M}{by}",
        reason=a.reason or "",
        parent=versions.get(a.parent_id) if a.parent_id else None,
        replaced=versions.get(a.replaced_id) if a.replaced_id else None,
        promoted_via=a.promoted_via,
        new_labels=dict(stats.get("new_labels") or {}),
        validation=dict((a.training or {}).get("validation") or {}),
        gate_fields=gate_fields,
        confidence=report.get("confidence"),
        replies=report.get("replies") if (report.get("replies") or {}).get("n") else None,
        shadow=report.get("shadow"),
        rollback=report.get("rollback_check"),
        report=report or None,
        data=a.data,
    )
