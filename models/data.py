"""Dataset reading (JSONL / CSV), label sets, deterministic splits. Label fields are data, never code."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_COLUMNS = ("id", "subject", "body", "reply", "language", "title", "description")


class DataError(ValueError):
    """A training / evaluation file that cannot be used, with a message saying why and where."""


@dataclass
class Ticket:
    id: str
    subject: str
    body: str
    labels: dict[str, str] = field(default_factory=dict)
    reply: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[dict[str, Any]] = []
    try:
        header = reader.fieldnames
        if not header:
            raise DataError(f"{path}: empty CSV (no header row)")
        for row in reader:
            if None in row:  # more cells than header columns: usually an unescaped quote or comma
                raise DataError(
                    f"{path}:{reader.line_num}: row has {len(header) + len(row[None])} cells but the header has "
                    f"{len(header)}; check the quoting"
                )
            if any(v is None for v in row.values()):
                raise DataError(f"{path}:{reader.line_num}: row has fewer cells than the header; check the quoting")
            rows.append(dict(row))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: broken CSV ({e}); check the quoting") from None
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Raw rows of a .jsonl / .json / .csv / .tsv file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(p)
    elif suffix == ".json":
        obj = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise DataError(f"{p}: a .json file must hold a list of objects")
        rows = obj
    elif suffix == ".csv":
        rows = _read_csv(p)
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .jsonl or .csv)")
    if not rows:
        raise DataError(f"{p}: no rows")
    return rows


def _str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v != v:  # NaN
        return ""
    return str(v)


def infer_fields(rows: Sequence[dict[str, Any]], exclude: Iterable[str]) -> list[str]:
    """Columns that look like closed label sets: few distinct short values that repeat."""
    excl = set(exclude) | set(TEXT_COLUMNS)
    cols = [c for c in rows[0] if c not in excl]
    out = []
    for c in cols:
        vals = [_str(r.get(c)).strip() for r in rows]
        vals = [v for v in vals if v]
        if len(vals) < max(2, len(rows) // 2):
            continue
        distinct = set(vals)
        if 2 <= len(distinct) <= min(200, max(2, len(vals) // 5)) and max(len(v) for v in distinct) <= 80:
            out.append(c)
    return out


def parse_tickets(
    rows: Sequence[dict[str, Any]],
    fields: Sequence[str] | None = None,
    *,
    subject_col: str = "subject",
    body_col: str = "body",
    id_col: str = "id",
    reply_col: str | None = "reply",
    require_labels: bool = True,
    source: str = "data",
) -> tuple[list[Ticket], list[str]]:
    """Validate columns and rows; return tickets and the label fields used."""
    if not rows:
        raise DataError(f"{source}: no rows")
    columns: set[str] = set()
    for r in rows:
        columns.update(r.keys())
    if subject_col not in columns and body_col not in columns:
        raise DataError(
            f"{source}: neither a {subject_col!r} nor a {body_col!r} column; columns are {sorted(columns)} "
            f"(use --subject-col / --body-col)"
        )
    if fields is None:
        fields = infer_fields(rows, exclude=[subject_col, body_col, id_col, reply_col or ""])
        if require_labels and not fields:
            raise DataError(f"{source}: no label columns found; name them with --fields (columns: {sorted(columns)})")
    unknown = [f for f in fields if f not in columns]
    if unknown:
        raise DataError(f"{source}: unknown label column(s) {unknown}; columns are {sorted(columns)}")
    tickets = []
    for n, r in enumerate(rows, 1):
        subject, body = _str(r.get(subject_col)).strip(), _str(r.get(body_col)).strip()
        if not subject and not body:
            raise DataError(f"{source}: row {n} has neither a subject nor a body")
        rid = _str(r.get(id_col)).strip() or str(n)
        labels = {f: _str(r.get(f)).strip() for f in fields if _str(r.get(f)).strip()}
        reply = _str(r.get(reply_col)).strip() if reply_col else ""
        tickets.append(
            Ticket(
                id=rid,
                subject=subject,
                body=body,
                labels=labels,
                reply=reply or None,
                extra={k: v for k, v in r.items() if k not in (subject_col, body_col)},
            )
        )
    if require_labels:
        for f in fields:
            counts = Counter(t.labels[f] for t in tickets if f in t.labels)
            if len(counts) < 2:
                only = next(iter(counts), None)
                raise DataError(
                    f"{source}: label column {f!r} has {len(counts)} class(es) ({only!r}); "
                    f"a classifier needs at least two"
                )
    return tickets, list(fields)


def load_tickets(path: str | Path, fields: Sequence[str] | None = None, **kw: Any) -> tuple[list[Ticket], list[str]]:
    return parse_tickets(read_rows(path), fields, source=str(path), **kw)


def label_sets(tickets: Sequence[Ticket], fields: Sequence[str]) -> dict[str, list[str]]:
    return {f: sorted({t.labels[f] for t in tickets if f in t.labels}) for f in fields}


def _bucket(key: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split(tickets: Sequence[Ticket], fraction: float, seed: int = 13) -> tuple[list[Ticket], list[Ticket]]:
    """Deterministic split by a hash of the ticket id: (rest, held) with about `fraction` held."""
    rest: list[Ticket] = []
    held: list[Ticket] = []
    for t in tickets:
        (held if _bucket(t.id, seed) < fraction else rest).append(t)
    if not held and len(rest) > 1:
        held.append(rest.pop())
    return rest, held


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
