"""Model inputs from tickets, shared by train, evaluate and inference: the text the model reads, label matrices,
columns aligned to an adapter's label order, and the adapter's own train / validation split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import log_softmax
from models.data import Ticket, load_tickets, split
from models.prompts import sanitize, ticket_text


def texts_of(tickets: Sequence[Ticket], max_chars: int) -> list[str]:
    """The sanitised subject + body each model member reads, cut to `max_chars`."""
    return [ticket_text(sanitize(t.subject), sanitize(t.body))[:max_chars] for t in tickets]


def label_matrix(tickets: Sequence[Ticket], sets: dict[str, list[str]]) -> np.ndarray:
    """(tickets, fields) label indices in each field's label order; -100 where a ticket has no (known) label."""
    idx = {f: {lab: i for i, lab in enumerate(labels)} for f, labels in sets.items()}
    return np.array([[idx[f].get(t.labels.get(f, ""), -100) for f in sets] for t in tickets], dtype=np.int64)


def align(logp: np.ndarray, have: list[str], want: list[str]) -> np.ndarray:
    """Reorder a member's columns to the adapter's label order (labels the member never saw get -inf-ish)."""
    out = np.full((logp.shape[0], len(want)), -30.0)
    pos = {c: i for i, c in enumerate(have)}
    for j, c in enumerate(want):
        if c in pos:
            out[:, j] = logp[:, pos[c]]
    return log_softmax(out)


def training_split(meta: dict[str, Any], train_data: str | Path) -> tuple[list[Ticket], list[Ticket]]:
    """Re-create the adapter's train / validation rows from its training file (same hash split)."""
    fields = list(meta["fields"])
    tickets, _ = load_tickets(train_data, fields)
    d = meta.get("data", {})
    if d.get("val_fraction"):
        return split(tickets, float(d["val_fraction"]), seed=int(d.get("seed", 13)))
    return tickets, []
