"""bench/gpu.py, the one prepared device check, runs end to end on CPU at tiny shapes (so a session lent a GPU
spends its minutes measuring, not debugging the script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.tiny_llama import bundled_tokenizer_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not (bundled_tokenizer_dir() / "tokenizer.json").exists(), reason="bundled tokenizer not fetched")
def test_the_device_check_prints_its_table_on_cpu() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--tiny"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("| tiny |")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(cells) == 13 and all(cells)
    assert float(cells[2]) > 0 and float(cells[5]) > 0 and float(cells[7]) > 0 and float(cells[11]) > 0
