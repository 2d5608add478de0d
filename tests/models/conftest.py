"""Fixtures for the model tests: the bundled base (fetched by `make setup`), the shipped adapter, and a tiny
synthetic data set for real (slow-marked) training runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ITSM_MODEL__CACHE_DIR", REPO / "var" / "models"))

TOPICS = {
    "network": [
        ("VPN down", "I cannot connect to the VPN since this morning, the tunnel drops."),
        ("WLAN geht nicht", "Das WLAN im Büro bricht ständig ab, bitte prüfen Sie den Router."),
        ("Wi-Fi outage", "The office Wi-Fi keeps disconnecting every few minutes."),
    ],
    "billing": [
        ("Invoice wrong", "Our March invoice charged us twice for the same licence."),
        ("Rechnung fehlerhaft", "Die Rechnung für März enthält eine doppelte Abbuchung."),
        ("Refund request", "Please refund the duplicate payment on our account."),
    ],
    "access": [
        ("Password reset", "I am locked out of my account and need a password reset."),
        ("Konto gesperrt", "Mein Konto ist gesperrt, ich kann mich nicht anmelden."),
        ("", "Need access to the shared finance folder for my new role."),
    ],
}


def tiny_rows(n: int = 36) -> list[dict]:
    rows = []
    names = list(TOPICS)
    for i in range(n):
        q = names[i % 3]
        subj, body = TOPICS[q][(i // 3) % 3]
        rows.append(
            {
                "id": f"t{i}",
                "subject": subj,
                "body": f"{body} (ref {i})",
                "queue": q,
                "priority": ["high", "low"][(i // 2) % 2],
                "reply": "Thank you, we are looking into it.",
                "unused_column": "x",
            }
        )
    return rows


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_rows()))
    return p


@pytest.fixture(scope="session")
def model_cfg():  # type: ignore[no-untyped-def]
    from models.config import ModelConfig

    return ModelConfig(cache_dir=CACHE, max_new_tokens=24, batch_size=8)


@pytest.fixture(scope="session")
def triager(model_cfg):  # type: ignore[no-untyped-def]
    from models.adapter import DEFAULT_ADAPTER
    from models.inference import Triager

    if not (DEFAULT_ADAPTER / "triage.json").exists():
        pytest.skip("no shipped default adapter")
    return Triager.load(model_cfg)
