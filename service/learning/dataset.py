"""What a retrain learns from: the live adapter's own training tickets (its ticket memory) plus every reviewed
ticket (corrected labels win; sent replies are reply data), with the most recent reviews held out for the gate.

Order matters: the held-out tickets are the newest reviews the live adapter never trained on, so the gate asks
whether the candidate would have triaged *recent* tickets better, not a random sample of the past. A reviewed ticket
replaces any training ticket with the same id or the same text (a re-filed ticket: the agents' latest label wins),
and tickets erased since (the erasure log) are left out, so an erasure also reaches every later adapter.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from service.domain.privacy import Erasure
from service.domain.tables import LabelCorrection, Suggestion, Ticket
from service.review.feedback import DECIDED, TEXT_COLUMNS, training_rows

MEMORY_FILE = "tickets.jsonl.gz"  # models/ticket_memory.py FILE: every training and validation ticket of the adapter
WEIGHT = "_weight"  # the training file's weight column (TrainConfig.weight_col)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NothingToLearn(RuntimeError):
    """Too few reviewed tickets the live adapter has not learnt from yet."""


@dataclass
class TrainingSet:
    """Rows for the training file, the held-out rows for the gate, and what the live adapter's memory has learnt."""

    train: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    remembered: list[dict[str, Any]]  # reviewed rows in `train`: the live adapter's memory sync has them too
    erased: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    # history rows with a held-out ticket's text (a re-filing): kept out of the candidate's training, so the gate
    # takes them out of the live adapter's memory too; else the live one answers those tickets from their twins
    # (votes at similarity 1, the very reply) and the comparison favours it (bench/learning_loop.py: reply chrF
    # 41.9 vs 34.4, 6 of 40 held-out replies copied from twins)
    held_twins: list[str] = field(default_factory=list)


def history_rows(adapter_dir: Path, fields: list[str]) -> list[dict[str, Any]]:
    """The adapter's training tickets from its ticket memory, as training rows (subject and body split again)."""
    path = Path(adapter_dir) / MEMORY_FILE
    if not path.exists():
        return []
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            text = str(row.get("text") or "")
            subject, body = "", text
            if text.startswith("Subject: "):  # models/prompts.py ticket_text
                subject, _, body = text.removeprefix("Subject: ").partition("\n\n")
            labels = {f: v for f, v in (row.get("labels") or {}).items() if f in fields and v}
            out.append({"id": str(row["id"]), "subject": subject, "body": body, **labels, "reply": row.get("reply")})
    return out


def reviewed_rows(session: Session, fields: list[str]) -> list[tuple[datetime, dict[str, Any]]]:
    """Every reviewed ticket with at least one label of `fields`, oldest review first: (review time, row)."""
    when = _review_times(session)
    out = []
    for row in training_rows(session, since=_EPOCH):
        if not any(row.get(f) for f in fields):
            continue
        keep = {k: v for k, v in row.items() if k in TEXT_COLUMNS or k in fields}
        out.append((when.get(row["id"], _EPOCH), keep))
    out.sort(key=lambda r: (r[0], r[1]["id"]))
    return out


def erased_ids(session: Session) -> set[str]:
    """Every ticket-memory id the erasure log names."""
    return {str(i) for ids in session.exec(select(Erasure.memory_ids)).all() for i in (ids or [])}


def build(
    session: Session,
    adapter_dir: Path,
    fields: list[str],
    *,
    holdout: int,
    min_reviewed: int,
    review_weight: int,
) -> TrainingSet:
    """The training and held-out rows of a retrain on top of the adapter in `adapter_dir`."""
    history = history_rows(adapter_dir, fields)
    seen = {r["id"] for r in history}
    erased = erased_ids(session)
    reviewed = [(at, r) for at, r in reviewed_rows(session, fields) if r["id"] not in erased]
    fresh = [(at, r) for at, r in reviewed if r["id"] not in seen]
    if len(fresh) < min_reviewed:
        raise NothingToLearn(
            f"{len(fresh)} reviewed ticket(s) the live adapter has not learnt from; a retrain needs "
            f"{min_reviewed} (ITSM_LEARNING__MIN_REVIEWED)"
        )
    # the newest reviews the live adapter never saw, at most a third of them
    n_hold = min(holdout, len(fresh) // 3)
    held = fresh[len(fresh) - n_hold :] if n_hold else []
    held_ids = {r["id"] for _, r in held}
    learn = [(at, r) for at, r in reviewed if r["id"] not in held_ids]
    taught = {r["id"] for _, r in learn}
    texts = {_norm(r) for _, r in reviewed}
    kept = [r for r in history if r["id"] not in erased and r["id"] not in taught and r["id"] not in held_ids]
    kept_unique = [r for r in kept if _norm(r) not in texts]
    held_texts = {_norm(r) for _, r in held}
    held_twins = [r["id"] for r in kept if _norm(r) in held_texts]
    train = kept_unique + [{**r, WEIGHT: review_weight} for _, r in learn]
    known = {f: {r.get(f) for r in history if r.get(f)} for f in fields}
    new_labels = {
        f: sorted({str(r[f]) for _, r in learn if r.get(f) and r[f] not in known[f]}) for f in fields if known[f]
    }
    stats = {
        "rows": len(train),
        "history_rows": len(kept_unique),
        "history_replaced": len(history) - len(kept_unique),
        "reviewed": len(learn),
        "reviewed_new": len(fresh) - n_hold,
        "reviewed_from": _iso(learn[0][0]) if learn else None,
        "reviewed_until": _iso(learn[-1][0]) if learn else None,
        "holdout": len(held),
        "holdout_from": _iso(held[0][0]) if held else None,
        "holdout_until": _iso(held[-1][0]) if held else None,
        "new_labels": {f: v for f, v in new_labels.items() if v},
        "review_weight": review_weight,
        # reviews from here on are not in the candidate's training data: the workers' memory sync adds them
        "memory_since": _iso(held[0][0] if held else (learn[-1][0] if learn else _EPOCH)),
    }
    return TrainingSet(
        train=train,
        holdout=[r for _, r in held],
        remembered=[r for _, r in learn],
        erased=sorted(erased),
        stats={**stats, "held_twins": len(held_twins)},
        held_twins=held_twins,
    )


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    """Rows as JSON lines (what `train` and the gate read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _review_times(session: Session) -> dict[str, datetime]:
    """Ticket-memory id -> when a person last decided its draft or corrected its labels."""
    decided = session.exec(
        select(Suggestion.ticket_id, func.max(Suggestion.decided_at))
        .where(col(Suggestion.status).in_(DECIDED))
        .group_by(col(Suggestion.ticket_id))
    ).all()
    corrected = session.exec(
        select(LabelCorrection.ticket_id, func.max(LabelCorrection.created_at)).group_by(col(LabelCorrection.ticket_id))
    ).all()
    latest: dict[int, datetime] = {}
    for ticket_id, at in [*decided, *corrected]:
        if at is not None:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            latest[ticket_id] = max(latest.get(ticket_id, at), at)
    names = {}
    ids = sorted(latest)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for tid, source, key in session.exec(
            select(Ticket.id, Ticket.source, Ticket.external_key).where(col(Ticket.id).in_(chunk))
        ).all():
            names[f"{source}:{key}"] = latest[int(tid or 0)]
    return names


def _norm(row: dict[str, Any]) -> str:
    """A ticket's text for spotting re-filings: case and whitespace do not count."""
    return " ".join(f"{row.get('subject') or ''} {row.get('body') or ''}".casefold().split())


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()
