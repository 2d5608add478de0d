"""The model path on a tiny random Llama: what CI runs at both ends of the declared transformers / peft ranges
(`make test-model-versions`), and with the network unreachable (sockets blocked)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.models.conftest import tiny_rows
from tests.models.tiny_llama import build_tiny_llama, bundled_tokenizer_dir

pytestmark = pytest.mark.skipif(
    not (bundled_tokenizer_dir() / "tokenizer.json").exists(), reason="bundled tokenizer not fetched (make setup)"
)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_cfg(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from models.config import ModelConfig

    return ModelConfig(
        base=str(tiny_base),
        device="cpu",
        dtype="float32",
        cache_dir=tmp_path_factory.mktemp("cache"),
        max_new_tokens=12,
        batch_size=4,
    )


def test_our_layer_loop_matches_the_models_own_forward(tiny_cfg) -> None:  # type: ignore[no-untyped-def]
    """run_layers (our mask, our loop over the decoder layers) gives the hidden states the library's own forward
    gives on every real token: the check that fails when a transformers release changes the layer interface."""
    import torch

    from models.backbone import ClassifyTokenizer, embed, num_layers, run_layers
    from models.loading import load_base

    lm, tok, _, _, _ = load_base(tiny_cfg)
    ids, mask = ClassifyTokenizer(tok, 32)(["VPN down since this morning", "x", "Rechnung doppelt abgebucht " * 3])
    with torch.inference_mode():
        ours = run_layers(lm, embed(lm, ids), mask, 0, num_layers(lm), True)
        theirs = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-4), (ours[real] - theirs[real]).abs().max()
    # split in two (the cached-bottom-layers path of training) gives the same result
    with torch.inference_mode():
        h = run_layers(lm, embed(lm, ids), mask, 0, 1, False)
        split = run_layers(lm, h, mask, 1, num_layers(lm), True)
    assert torch.allclose(split[real], ours[real], atol=1e-5)


@pytest.mark.disable_socket
def test_train_and_predict_never_reach_the_network(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With every socket refused, an adapter is trained on the tiny base and predicts labels and drafts; hub kernels
    stay off unless the operator turns them on."""
    import socket

    from models.config import ModelConfig, TrainConfig
    from models.inference import TicketInput, Triager
    from models.train import train

    with pytest.raises(Exception, match=r"(?i)socket"):
        socket.create_connection(("127.0.0.1", 9))  # the guard is on
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))
    out = tmp_path / "adapter"
    tcfg = TrainConfig(
        fields=["queue", "priority"], max_steps=2, batch_size=8, max_tokens=24, lora_layers=2, val_fraction=0.25
    )
    meta = train(data, out, tcfg, tiny_cfg, log_fn=lambda *_: None)
    assert meta["training"]["steps"] == 2 and os.environ["USE_HUB_KERNELS"] == "NO"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tri = Triager.load(ModelConfig(**{**tiny_cfg.__dict__, "adapter": str(out), "reply_mode": "generate"}))
    assert not getattr(tri.lm.get_base_model(), "use_kernels", False)
    preds = tri.predict([TicketInput("1", "VPN", "VPN down again"), TicketInput("2", "", "Rechnung falsch")])
    assert [p.labels["queue"].label in {"access", "billing", "network"} for p in preds] == [True, True]
    assert all(abs(sum(p.labels["priority"].probabilities.values()) - 1) < 1e-6 for p in preds)
    assert all(isinstance(p.reply, str) and p.reply_source == "model" for p in preds)


def test_an_absent_hub_model_says_how_to_provide_it_instead_of_downloading(tmp_path: Path) -> None:
    from models.config import ModelConfig
    from models.loading import ModelFetchError, load_base

    cfg = ModelConfig(base="example-org/not-in-the-cache-7b", device="cpu", cache_dir=tmp_path)
    with pytest.raises(ModelFetchError, match="ITSM_MODEL__OFFLINE"):
        load_base(cfg)


def test_static_bucketed_drafting_gives_the_natural_shapes_drafts(tiny_cfg) -> None:  # type: ignore[no-untyped-def]
    """The GPU drafting path (static KV cache, batches padded to bucket sizes and prompts to bucket lengths) runs on
    CPU too and drafts exactly what the unpadded batches draft (greedy decoding, fp32)."""
    from models.drafting import Buckets, Drafter
    from models.loading import load_base

    lm, tok, _, _, _ = load_base(tiny_cfg)
    texts = ["VPN down since this morning", "Rechnung doppelt abgebucht", "x", "Drucker im 2. Stock druckt nicht"]
    langs = ["en", "de", None, "de"]
    natural = Drafter(lm, tok, "cpu", max_new_tokens=8, batch_size=3, static=False)
    static = Drafter(lm, tok, "cpu", max_new_tokens=8, batch_size=3, static=True, buckets=Buckets((2, 4), (128, 256)))
    assert static.warm_up() > 0 and natural.warm_up() == 0.0
    # every shape a batch of up to 3 drafts can be padded to was run before the first request
    assert sorted(static.warmed) == [(2, 128), (2, 256), (4, 128), (4, 256)]
    want = natural.draft(texts, langs)
    assert static.draft(texts, langs) == want and all(isinstance(d, str) for d in want)
    # a prompt longer than the largest bucket keeps its end (the question and the greeting)
    long_static = Drafter(lm, tok, "cpu", max_new_tokens=4, batch_size=2, static=True, buckets=Buckets((2,), (64,)))
    assert len(long_static.draft(["word " * 400], ["en"])) == 1


def test_gradient_checkpointing_trains_the_same_adapter(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Recomputing activations in the backward pass (what lets a 1-8B model train on one GPU) changes memory, not
    the result: the same steps give the same weights."""
    from safetensors.torch import load_file

    from models.config import TrainConfig
    from models.train import train

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))
    heads = {}
    for flag in (False, True):
        tcfg = TrainConfig(
            fields=["queue"], max_steps=2, batch_size=8, max_tokens=16, lora_layers=2, gradient_checkpointing=flag
        )
        meta = train(data, tmp_path / str(flag), tcfg, tiny_cfg, log_fn=lambda *_: None)
        assert meta["training"]["gradient_checkpointing"] is flag and meta["training"]["per_device_batch"] == 8
        heads[flag] = load_file(str(tmp_path / str(flag) / "heads.safetensors"))
    for name, tensor in heads[False].items():
        assert torch_allclose(tensor, heads[True][name]), name


def torch_allclose(a, b) -> bool:  # type: ignore[no-untyped-def]
    import torch

    return bool(torch.allclose(a, b, atol=1e-5))


def test_a_step_that_does_not_fit_is_halved_and_accumulated() -> None:
    import torch

    from models.batch_plan import BatchPlan, plan_batch

    tried: list[int] = []

    def step(n: int) -> None:
        tried.append(n)
        if n > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert plan_batch(16, step, "cuda") == BatchPlan(4, 4) and tried == [16, 8, 4]
    assert plan_batch(16, step, "cpu") == BatchPlan(16, 1)  # a CPU is never probed

    def broken(n: int) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        plan_batch(16, broken, "cuda")


def test_a_warm_start_keeps_what_the_earlier_adapter_learnt_and_adds_new_labels(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A retrain from the live adapter: with the learning rates at 0, the candidate is the live adapter exactly (LoRA
    weights, head rows of known labels, in the new label order), and a label the live one never knew gets a row."""
    from peft.utils import load_peft_weights
    from safetensors.torch import load_file

    from models.config import TrainConfig
    from models.train import train

    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))
    recipe = dict(fields=["queue"], max_steps=2, batch_size=8, max_tokens=16, lora_layers=2)
    train(first, tmp_path / "live", TrainConfig(**recipe), tiny_cfg, log_fn=lambda *_: None)
    rows = tiny_rows() + [
        {"id": f"p{i}", "subject": "Printer jam", "body": f"The printer on floor {i} jams.", "queue": "aaa-printing"}
        for i in range(12)
    ]
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines: list[str] = []
    still = TrainConfig(**recipe, lr=0.0, head_lr=0.0, init_adapter=str(tmp_path / "live"))  # type: ignore[arg-type]
    meta = train(second, tmp_path / "warm", still, tiny_cfg, log_fn=lambda line: lines.append(str(line)))
    assert any("warm start" in line and "new: queue:aaa-printing" in line for line in lines), lines
    assert any(line.startswith("imprinted new label rows: queue:aaa-printing from") for line in lines), lines

    live_meta = json.loads((tmp_path / "live" / "triage.json").read_text())
    old, new = live_meta["fields"]["queue"], meta["fields"]["queue"]
    assert new[0] == "aaa-printing" and set(new) == {*old, "aaa-printing"}  # the known labels moved down a row
    assert meta["lexical"]["settings"] == live_meta["lexical"]["settings"]  # the partner kept, not searched again
    assert (
        meta["training"]["after_training"]["searched"] is False and live_meta["training"]["after_training"]["searched"]
    )
    lw, ww = (
        load_file(str(tmp_path / "live" / "heads.safetensors")),
        load_file(str(tmp_path / "warm" / "heads.safetensors")),
    )
    for j, label in enumerate(new):
        if label in old:
            assert torch_allclose(ww["heads.queue.weight"][j], lw["heads.queue.weight"][old.index(label)]), label
        else:
            assert ww["heads.queue.weight"][j].abs().sum() > 0  # a new row, imprinted (tests/models/test_imprint.py)
    live_lora, warm_lora = load_peft_weights(str(tmp_path / "live")), load_peft_weights(str(tmp_path / "warm"))
    assert live_lora.keys() == warm_lora.keys()
    assert all(torch_allclose(live_lora[k], warm_lora[k]) for k in live_lora)
    assert any(float(v.abs().sum()) > 0 for k, v in live_lora.items() if "lora_B" in k)  # a real check, not zeros


def test_a_warm_start_from_another_recipe_is_refused(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from models.config import TrainConfig
    from models.train import train

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))
    base = dict(fields=["queue"], max_steps=1, batch_size=8, max_tokens=16)
    train(data, tmp_path / "two", TrainConfig(**base, lora_layers=2), tiny_cfg, log_fn=lambda *_: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer"):
        train(data, tmp_path / "one", TrainConfig(**base, lora_layers=1, init_adapter=str(tmp_path / "two")),  # type: ignore[arg-type]
              tiny_cfg, log_fn=lambda *_: None)  # fmt: skip


def test_cached_features_keep_the_time_they_took_for_the_time_plan(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A cache hit must not make the plan think the validation pass is free (a retrain overran its budget so)."""
    import dataclasses

    from models.config import TrainConfig
    from models.train import train

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))
    cfg = dataclasses.replace(tiny_cfg, cache_dir=tmp_path / "cache")
    tcfg = TrainConfig(fields=["queue"], max_steps=1, batch_size=8, max_tokens=16, lora_layers=2)
    first: list[str] = []
    train(data, tmp_path / "a", tcfg, cfg, log_fn=lambda line: first.append(str(line)))
    sidecars = list((tmp_path / "cache" / "features").glob("*.json"))
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["seconds"] >= 0
    sidecars[0].write_text(json.dumps({"seconds": 123.0}))
    second: list[str] = []
    train(data, tmp_path / "b", tcfg, cfg, log_fn=lambda line: second.append(str(line)))
    assert any("from the cache (computing them takes ~123s)" in line for line in second), second
    sidecars[0].unlink()  # a cache from before the sidecar: a timed sample stands in
    third: list[str] = []
    train(data, tmp_path / "c", tcfg, cfg, log_fn=lambda line: third.append(str(line)))
    assert any("from the cache (computing them takes ~" in line for line in third), third


def test_a_small_budget_trains_on_the_tickets_whose_features_fit(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The frozen feature pass never takes the whole budget: a budget too small for every ticket's features keeps
    as many distinct tickets as fit (at least 64), and the run still trains."""
    from models.config import TrainConfig
    from models.train import train

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_rows(150)))
    lines: list[str] = []
    tcfg = TrainConfig(fields=["queue"], max_steps=1, batch_size=8, max_tokens=16, lora_layers=2, time_budget_min=0.001)
    meta = train(data, tmp_path / "a", tcfg, tiny_cfg, log_fn=lambda line: lines.append(str(line)))
    assert any("budget leaves time for the features of 64 of " in line for line in lines), lines
    assert meta["data"]["llm_train_rows"] == 64 and meta["training"]["steps"] == 1


def test_the_tickets_that_fit_are_agents_weighted_ones_first() -> None:
    from models.data import Ticket
    from models.train import _fit_texts

    rows = [Ticket(f"t{i}", f"s{i}", "b", {"queue": "q"}, extra={"w": 3 if i % 10 == 0 else 1}) for i in range(100)]
    rows += rows[:5]  # a text twice keeps both rows
    texts = [f"{r.subject} {r.body}" for r in rows]
    kept = _fit_texts(rows, texts, 20, "w", seed=1)
    kept_texts = {f"{r.subject} {r.body}" for r in kept}
    assert len(kept_texts) == 20 and {f"s{i} b" for i in range(0, 100, 10)} <= kept_texts
    assert sum(1 for r in kept if r.id == "t0") == 2
    assert _fit_texts(rows, texts, 20, "w", seed=1) == kept  # seeded
    assert len({f"{r.subject} {r.body}" for r in _fit_texts(rows, texts, 20, None, seed=1)}) == 20


def test_the_work_after_training_is_planned_from_what_it_took_last_time() -> None:
    """A retrain plans the validation, partner and memory work from the seconds the adapter it starts from
    recorded (scaled to the rows), not from the formula, when that adapter did the same kind of partner fit."""
    from models.train import _after_training_s

    before = {"seconds": 100.0, "val_rows": 500, "partner_rows": 4000, "searched": False}
    assert _after_training_s(0.1, 500, 30, 26, 4000, False, before) == pytest.approx(120.0)
    assert _after_training_s(0.1, 500, 30, 26, 8000, False, before) == pytest.approx(240.0)  # twice the partner rows
    formula = _after_training_s(0.1, 500, 30, 26, 4000, True, None)
    assert _after_training_s(0.1, 500, 30, 26, 4000, True, before) == formula  # it searched then: not comparable
