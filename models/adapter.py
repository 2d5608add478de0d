"""Adapter directory layout: peft LoRA weights, heads, lexical model, and triage.json metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_ADAPTER = Path(__file__).resolve().parent / "default_adapter"
META = "triage.json"
HEADS = "heads.safetensors"


class AdapterError(ValueError):
    """An adapter directory that is missing or unusable."""


def resolve_adapter(adapter: str | None) -> Path:
    p = DEFAULT_ADAPTER if adapter in (None, "", "default") else Path(str(adapter))
    if not (p / META).exists():
        raise AdapterError(f"{p}: not a triage adapter (no {META}); train one with `itsm-triage train`")
    return p


def read_meta(d: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((d / META).read_text())
    return meta


def write_meta(d: Path, meta: dict[str, Any]) -> None:
    (d / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
