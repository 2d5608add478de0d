"""Real training, evaluation and prediction on a tiny synthetic set (slow: loads and trains the base model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_adapter(tiny_data: Path, model_cfg, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from models.config import TrainConfig
    from models.train import train

    out = tmp_path_factory.mktemp("adapter")
    tcfg = TrainConfig(
        fields=["queue", "priority"],
        max_steps=3,
        batch_size=8,
        max_tokens=32,
        lora_layers=2,
        val_fraction=0.25,
        time_budget_min=10,
    )
    meta = train(tiny_data, out, tcfg, model_cfg, log_fn=lambda *_: None)
    assert meta["training"]["steps"] == 3
    return out


def test_adapter_metadata(tiny_adapter: Path, tiny_data: Path) -> None:
    meta = json.loads((tiny_adapter / "triage.json").read_text())
    assert meta["fields"] == {"queue": ["access", "billing", "network"], "priority": ["high", "low"]}
    assert meta["data"]["sha256"] and meta["code_version"] and meta["training"]["seconds"] > 0
    assert {"llm_raw", "llm_calibrated", "lexical", "ensemble_before_top_label", "ensemble"} <= set(
        meta["validation"]["queue"]
    )
    # the partner: word + char n-grams, C and class weighting recorded per field; a top-label map per field
    assert meta["lexical"]["kind"] == "word 1-2-gram + char_wb 2-5-gram"
    assert set(meta["lexical"]["settings"]) == {"queue", "priority"}
    assert all(len(c["top_label"]) == 2 and c["top_label"][0] > 0 for c in meta["calibration"].values())
    assert (tiny_adapter / "adapter_model.safetensors").exists() and (tiny_adapter / "heads.safetensors").exists()
    # every row (training and validation) has labels and a reply: all kept, for replies and neighbour votes
    assert meta["ticket_memory"] == {"rows": 36, "replies": 36} and (tiny_adapter / "tickets.jsonl.gz").exists()
    for f in ("queue", "priority"):
        cal = meta["calibration"][f]
        assert cal["neighbours"]["k"] == 5 and len(cal["neighbours"]["agreement"]) == 2 and cal["neighbour_weight"] >= 0
        assert "neighbours" in meta["validation"][f]


def test_predict_with_trained_adapter(tiny_adapter: Path, model_cfg) -> None:  # type: ignore[no-untyped-def]
    from models.config import ModelConfig
    from models.inference import TicketInput, Triager

    t = Triager.load(ModelConfig(**{**model_cfg.__dict__, "adapter": str(tiny_adapter)}))
    p = t.predict([TicketInput("1", "VPN", "VPN down again")], draft_replies=False)[0]
    assert p.labels["queue"].label in {"access", "billing", "network"}


def test_evaluate_writes_report_and_png(tiny_adapter: Path, tiny_data: Path, model_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from models.evaluate import evaluate

    report = tmp_path / "report.json"
    res = evaluate(
        str(tiny_adapter),
        tiny_data,
        report,
        model_cfg,
        train_data=tiny_data,
        reply_sample=2,
        log_fn=lambda *_: None,
        replay_reviews=4,
    )
    assert report.exists() and report.with_suffix(".png").exists()
    q = res["fields"]["queue"]
    keys = ("model", "model_reviews_remembered", "model_before_top_label", "lexical_partner", "tfidf_baseline")
    for k in (*keys, "llm_only_raw"):
        assert {"accuracy", "macro_f1", "ece", "per_class", "confusion_matrix", "precision_at_coverage"} <= set(q[k])
    margin = q["model_vs_tfidf"]
    assert abs(margin["macro_f1_margin"] - (q["model"]["macro_f1"] - q["tfidf_baseline"]["macro_f1"])) < 1e-9
    assert margin["model_ece"] == q["model"]["ece"]
    # the baseline is the plain word model, refitted, never the adapter's (stronger) partner
    assert res["baseline"]["kind"].startswith("tfidf word 1-2-gram +") and "char" not in res["baseline"]["kind"]
    assert "char_wb" in res["lexical_partner"]["kind"]
    rep = res["replies"]
    assert rep["n"] == 2 and "chrf" in rep["retrieval_baseline"] and "chrf" in rep["llm_draft"]
    lo, hi = rep["model_minus_retrieval_chrf"]["ci95"]
    assert lo <= rep["model_minus_retrieval_chrf"]["mean"] <= hi
    # the evaluated tickets are in the training file, so "retrieve" answers the English ones from the memory
    # (every stored reply is English: a German ticket gets an LLM draft instead)
    assert rep["reply_mode"] == "retrieve" and 0 < rep["from_history"] <= 1


def test_cli_train_rejects_one_class_column(tmp_path: Path) -> None:
    from service.cli import main

    p = tmp_path / "one.jsonl"
    p.write_text("".join(json.dumps({"subject": f"s{i}", "body": "b", "q": "same"}) + "\n" for i in range(10)))
    r = CliRunner().invoke(main, ["train", "--data", str(p), "--out", str(tmp_path / "a"), "--fields", "q"])
    assert r.exit_code == 2 and "has 1 class" in r.output


def test_cli_predict(tiny_adapter: Path, tiny_data: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from service.cli import main
    from tests.models.conftest import CACHE

    monkeypatch.setenv("ITSM_MODEL__CACHE_DIR", str(CACHE))
    out = tmp_path / "preds.jsonl"
    r = CliRunner().invoke(
        main, ["predict", "--adapter", str(tiny_adapter), "--data", str(tiny_data), "--out", str(out), "--no-reply"]
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 36 and lines[0]["id"] == "t0"
    assert set(lines[0]["predictions"]) == {"queue", "priority"} and lines[0]["reply"] is None


def test_recalibrate_keeps_llm_and_rewrites_calibration(tiny_adapter: Path, tiny_data: Path, model_cfg) -> None:  # type: ignore[no-untyped-def]
    from models.train import recalibrate

    before = (tiny_adapter / "adapter_model.safetensors").read_bytes()
    meta = recalibrate(tiny_adapter, tiny_data, model_cfg, log_fn=lambda *_: None)
    assert (tiny_adapter / "adapter_model.safetensors").read_bytes() == before
    assert set(meta["calibration"]) == set(meta["lexical"]["settings"]) == {"queue", "priority"}


def test_cli_recalibrate_refuses_another_training_file(tiny_adapter: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from service.cli import main
    from tests.models.conftest import CACHE

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"subject": "VPN", "body": "down", "queue": "network", "priority": "high"}) + "\n")
    monkeypatch.setenv("ITSM_MODEL__CACHE_DIR", str(CACHE))
    res = CliRunner().invoke(main, ["model", "recalibrate", "--adapter", str(tiny_adapter), "--data", str(other)])
    assert res.exit_code == 2 and "not this adapter's training file" in res.output


def test_evaluate_scores_the_adapters_fields_on_a_small_hold_out(
    tiny_adapter: Path, tiny_data: Path, model_cfg, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Six recent tickets with three queues look like free text to label-column inference; evaluate reads the
    adapter's own fields instead, and says per field whether the model beats the baseline."""
    from models.evaluate import evaluate

    small = tmp_path / "recent.jsonl"
    small.write_text("".join(tiny_data.read_text().splitlines(keepends=True)[:6]))
    said: list[str] = []
    res = evaluate(
        str(tiny_adapter), small, None, model_cfg, train_data=tiny_data, draft_replies=False, log_fn=said.append
    )
    assert set(res["fields"]) == {"queue", "priority"}
    assert sum("beats the TF-IDF baseline:" in line for line in said) == 2
