"""Hold out the most recent tickets: an import is written oldest first, so its last lines are the newest tickets.

Evaluating on them asks the question that matters on day one: would the adapter have triaged *recent* tickets
better than a TF-IDF classifier trained on the same older history? Two streaming passes; nothing is held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.history.records import HistoryError


@dataclass(frozen=True)
class SplitResult:
    """Rows written to each file."""

    train: int
    test: int


def split_recent(data: Path, *, train_out: Path, test_out: Path, fraction: float) -> SplitResult:
    """Copy the first (1 - fraction) of the non-empty lines to `train_out`, the rest to `test_out`."""
    if not 0 < fraction < 1:
        raise HistoryError(f"--recent must be between 0 and 1 (a share of the tickets), got {fraction}")
    if len({data.resolve(), train_out.resolve(), test_out.resolve()}) < 3:
        raise HistoryError("--data, --train-out and --test-out must be three different files")
    with data.open("rb") as f:
        rows = sum(1 for line in f if line.strip())
    test = max(1, round(rows * fraction))
    if rows < 2 or test >= rows:
        raise HistoryError(f"{data}: {rows} ticket(s) are too few to hold out {fraction:.0%} of them")
    train_out.parent.mkdir(parents=True, exist_ok=True)
    test_out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with data.open("rb") as f, train_out.open("wb") as tr, test_out.open("wb") as te:
        for line in f:
            if not line.strip():
                continue
            (tr if n < rows - test else te).write(line if line.endswith(b"\n") else line + b"\n")
            n += 1
    return SplitResult(train=rows - test, test=test)
