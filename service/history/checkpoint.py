"""The resume point of an import: a small JSON file beside the output, replaced atomically after every page.

It records how many bytes of the output are complete, the source's cursor and the counters. A re-run cuts the
output back to that size (a page half-written when the run stopped is written again) and carries on from the cursor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.history.records import HistoryError

VERSION = 1


@dataclass
class Checkpoint:
    """Where an import stands."""

    source: str
    options: dict[str, Any]  # what must match for a re-run to continue this import
    plan: dict[str, Any]  # the source's resolved query (e.g. the JQL with its window), reused as is on resume
    cursor: dict[str, Any] | None = None
    skip: int = 0  # tickets of the page at `cursor` already processed (a --limit stop mid-page)
    bytes: int = 0
    done: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    updated_at: str = ""

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at `path`, None when there is none; HistoryError when it is unreadable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise HistoryError(f"{path}: unreadable checkpoint ({exc}); remove it or pass --overwrite") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise HistoryError(f"{path}: not a checkpoint of this version; remove it or pass --overwrite")
        try:
            return cls(
                source=str(data["source"]),
                options=dict(data["options"]),
                plan=dict(data["plan"]),
                cursor=data.get("cursor"),
                skip=int(data.get("skip", 0)),
                bytes=int(data["bytes"]),
                done=bool(data.get("done", False)),
                summary=dict(data.get("summary") or {}),
                updated_at=str(data.get("updated_at") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HistoryError(f"{path}: incomplete checkpoint ({exc}); remove it or pass --overwrite") from None

    def save(self, path: Path) -> None:
        """Write to a temporary file, fsync, then rename over the old one: a crash leaves the old or the new."""
        self.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        data = {"version": VERSION, **self.__dict__}
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def mismatch(self, source: str, options: dict[str, Any]) -> str | None:
        """Why this checkpoint belongs to a different import, or None when a re-run may continue it."""
        if source != self.source:
            return f"it was started with --source {self.source}"
        for key in sorted(set(options) | set(self.options)):
            if options.get(key) != self.options.get(key):
                return f"{key} was {self.options.get(key)!r}, now {options.get(key)!r}"
        return None
