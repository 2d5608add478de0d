"""Fixtures for the learning loop: a tiny random Llama base (real architecture, trains in seconds), the first
adapter trained on it with the known kinds of tickets, and settings that point the service at both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from service.db import make_engine
from service.migrate import upgrade
from service.settings import Settings
from tests.conftest import JIRA_SECRET
from tests.learning.tickets import training_rows
from tests.models.tiny_llama import build_tiny_llama, bundled_tokenizer_dir

needs_tokenizer = pytest.mark.skipif(
    not (bundled_tokenizer_dir() / "tokenizer.json").exists(), reason="bundled tokenizer not fetched (make setup)"
)

# The first adapter's recipe; a retrain keeps it (service/learning/retrain.py RECIPE)
RECIPE: dict[str, Any] = {"fields": ["queue", "priority"], "batch_size": 8, "max_tokens": 32, "lora_layers": 2,
                          "epochs": 6.0, "head_lr": 5e-3, "val_fraction": 0.2, "time_budget_min": 5.0}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the bundled tokenizer."""
    if not (bundled_tokenizer_dir() / "tokenizer.json").exists():
        pytest.skip("bundled tokenizer not fetched (make setup)")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-base"), hidden=64, layers=3)


@pytest.fixture(scope="session")
def first_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapter the operator starts with: network, billing and access tickets, no printers."""
    from models.config import ModelConfig, TrainConfig
    from models.train import train

    root = tmp_path_factory.mktemp("first-adapter")
    data = root / "history.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in training_rows(48)))
    cfg = ModelConfig(
        base=str(tiny_base), device="cpu", dtype="float32", cache_dir=root / "cache", batch_size=8, threads=1
    )
    train(data, root / "adapter", TrainConfig(**RECIPE), cfg, log_fn=lambda *_: None)
    return root / "adapter"


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """One torch thread: a tiny model's matrices are too small to share out, and on a busy 2-core machine two
    threads wait for each other (measured: a tiny retrain 64 s with two, 17 s with one)."""
    monkeypatch.setenv("ITSM_TORCH_THREADS", "1")


def loop_settings(tmp_path: Path, base: Path, adapter: Path, **learning: Any) -> Settings:
    """SQLite settings for the whole loop on the tiny base (device CPU, fp32: the same numbers on every machine)."""
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'itsm.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        var_dir=tmp_path / "var",
        jira={"webhook_secret": JIRA_SECRET, "account_id": "62f0a1b2c3d4e5f607182930"},
        model={
            "base": str(base),
            "adapter": str(adapter),
            "device": "cpu",
            "dtype": "float32",
            "cache_dir": tmp_path / "models",
            "batch_size": 8,
            "max_new_tokens": 8,
            "memory_sync_s": 0.0,
        },
        learning={"cache_dir": tmp_path / "adapters", **learning},
    )


@pytest.fixture
def loop_engine(tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    """A migrated SQLite database for plain registry tests (no model)."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'itsm.db'}", var_dir=tmp_path / "var")
    upgrade(settings)
    engine = make_engine(settings)
    yield settings, engine
    engine.dispose()
