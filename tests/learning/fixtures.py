"""Helpers for the registry tests: adapter directories (the files a registry stores, no model), reviewed triages."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.learning import ShadowPrediction
from service.domain.tables import LabelCorrection, Suggestion, SuggestionStatus, Ticket, Triage

FIELDS = {"queue": ["Access", "Hardware", "Network"], "priority": ["P2", "P3"]}


def adapter_dir(root: Path, name: str, *, fields: dict[str, list[str]] | None = None, memory: list[dict[str, Any]]
                | None = None, base: str = "bundled:smollm2-135m-instruct") -> Path:  # fmt: skip
    """A directory shaped like a trained adapter: triage.json, weights-like files, an optional ticket memory."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": 1,
        "base_model": base,
        "model_version": "test-base",
        "fields": fields or FIELDS,
        "trained_at": "2026-11-01T00:00:00Z",
        "data": {"file": "train.jsonl", "train_rows": 10},
        "training": {"seconds": 1.0, "config": {"max_tokens": 32, "lora_layers": 2}},
        "validation": {"queue": {"ensemble": {"accuracy": 0.8, "macro_f1": 0.75, "ece": 0.05}}},
    }
    (d / "triage.json").write_text(json.dumps(meta))
    (d / "heads.safetensors").write_bytes(name.encode() * 100)
    (d / "adapter_model.safetensors").write_bytes(b"\x00" * 2048 + name.encode())
    if memory:
        with gzip.open(d / "tickets.jsonl.gz", "wt", encoding="utf-8") as f:
            for row in memory:
                f.write(json.dumps(row) + "\n")
    return d


def reviewed_triage(
    engine: Engine,
    *,
    version: str,
    predicted: dict[str, str],
    final: dict[str, str] | None = None,
    key: str,
    shadow: tuple[int, dict[str, str]] | None = None,
    subject: str = "Printer broken",
    body: str = "The printer on floor 2 jams.",
    at: datetime | None = None,
) -> int:
    """A ticket triaged by adapter `version`, reviewed: its draft approved at `at`, and corrected where `final`
    differs from `predicted`; optionally a shadow adapter's predictions (adapter id, labels). Returns the ticket id."""
    at = at or datetime.now(UTC)
    with Session(engine) as s:
        ticket = Ticket(source="jira", external_id=key, external_key=key, subject=subject, body=body)
        s.add(ticket)
        s.flush()
        assert ticket.id is not None
        triage = Triage(
            ticket_id=ticket.id,
            source_version=1,
            predictions={f: _pred(v) for f, v in predicted.items()},
            adapter_version=version,
            model_version="test",
            created_at=at - timedelta(seconds=30),
        )
        s.add(triage)
        s.flush()
        assert triage.id is not None
        s.add(
            Suggestion(
                triage_id=triage.id,
                ticket_id=ticket.id,
                draft="Hello",
                status=SuggestionStatus.approved,
                final_reply="Hello, we are on it.",
                decided_at=at,
            )
        )
        for f, v in (final or {}).items():
            if predicted.get(f) != v:
                s.add(LabelCorrection(ticket_id=ticket.id, field=f, old_value=predicted.get(f), new_value=v,
                                      origin="itsm", created_at=at))  # fmt: skip
        if shadow is not None:
            s.add(
                ShadowPrediction(
                    triage_id=triage.id,
                    ticket_id=ticket.id,
                    adapter_id=shadow[0],
                    predictions={f: _pred(v) for f, v in shadow[1].items()},
                )
            )
        s.commit()
        return ticket.id


def _pred(label: str) -> dict[str, Any]:
    return {"label": label, "confidence": 0.8, "probabilities": {label: 0.8}}
