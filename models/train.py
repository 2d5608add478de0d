"""Train an adapter: cached frozen bottom-layer features, LoRA on the top layers + label heads with
transformers' Trainer, then a TF-IDF partner, neighbour votes from the ticket memory and a calibrated ensemble
fitted on the validation split."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from models import adapter as adapter_io
from models import neighbours
from models.batch_plan import plan_batch
from models.calibration import (
    FieldScores,
    classification_report,
    fit_mixture_f1,
    fit_top_label,
    fit_weights,
    log_softmax,
)
from models.config import ModelConfig, TrainConfig
from models.data import DataError, Ticket, file_hash, label_sets, load_tickets, split
from models.imprint import imprint
from models.lexical import LexicalModel
from models.rows import align, label_matrix, texts_of, training_split
from models.ticket_memory import FILE as MEMORY_FILE
from models.ticket_memory import LEGACY_FILE as LEGACY_MEMORY_FILE
from models.ticket_memory import TicketMemory

log = logging.getLogger(__name__)


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class _Features:
    def __init__(self, hidden: Any, mask: Any, labels: np.ndarray) -> None:
        self.hidden, self.mask, self.labels = hidden, mask, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {"hidden": self.hidden[i], "attention_mask": self.mask[i], "labels": torch.from_numpy(self.labels[i])}


def _collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    mask = torch.stack([b["attention_mask"] for b in batch])
    w = min(mask.shape[1], -(-int(mask.sum(1).max()) // 8) * 8)  # few distinct shapes: kernels are cached
    return {
        "hidden": torch.stack([b["hidden"][:w] for b in batch]),
        "attention_mask": mask[:, :w],
        "labels": torch.stack([b["labels"] for b in batch]),
    }


def train(
    data: str | Path,
    out: str | Path,
    tcfg: TrainConfig,
    mcfg: ModelConfig,
    val: str | Path | None = None,
    log_fn: Any = print,
) -> dict[str, Any]:
    from models.loading import load_base, network_policy

    network_policy(mcfg)  # before transformers / peft are imported: their hub flags are read at import
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from models.backbone import ClassifyTokenizer, num_layers
    from models.classifier import Heads, TopModel, cpu_has_bf16, features_at, logits_for

    t0 = time.time()
    budget_s = tcfg.time_budget_min * 60
    kw = dict(subject_col=tcfg.subject_col, body_col=tcfg.body_col, id_col=tcfg.id_col, reply_col=tcfg.reply_field)
    tickets, fields = load_tickets(data, tcfg.fields, **kw)
    if val:
        val_t, _ = load_tickets(val, fields, **kw)
        train_t = tickets
    else:
        train_t, val_t = split(tickets, tcfg.val_fraction, seed=tcfg.seed)
    full_train_t = train_t  # the lexical partner learns from every training row; the LLM from a subset
    if tcfg.weight_col:
        train_t = weighted_rows(train_t, tcfg.weight_col, tcfg.max_train_rows, tcfg.seed)
    elif tcfg.max_train_rows and len(train_t) > tcfg.max_train_rows:
        rng = np.random.default_rng(tcfg.seed)
        train_t = [train_t[i] for i in sorted(rng.choice(len(train_t), tcfg.max_train_rows, replace=False))]
    sets = label_sets(train_t, fields)
    for f, labs in sets.items():
        if len(labs) < 2:
            raise ValueError(f"label column {f!r} has a single class in the training split")
    y_train = label_matrix(train_t, sets)
    log_fn(f"train {len(train_t)} / val {len(val_t)} tickets; fields { {f: len(v) for f, v in sets.items()} }")
    # a warm start keeps the earlier partner's C and class weighting (one fit per field instead of a six-fit
    # search: ~3 of a 12-minute retrain's minutes on 2 cores went to the search)
    init_meta = adapter_io.read_meta(Path(tcfg.init_adapter)) if tcfg.init_adapter else {}
    partner = _partner_settings(init_meta, sets)
    # what the work after training took the adapter we start from: a measurement beats the formula
    before = (init_meta.get("training") or {}).get("after_training")

    torch.manual_seed(tcfg.seed)
    # frozen base weights in bf16 where the hardware has fast bf16 (CUDA, AVX512-BF16/AMX CPUs); LoRA + heads fp32
    fast_bf16 = mcfg.dtype in ("auto", "bfloat16", "bf16") and (
        mcfg.device.startswith("cuda") or (mcfg.device in ("auto", "cpu") and cpu_has_bf16())
    )
    lm, tok, device, model_version, base_dtype = load_base(
        ModelConfig(**{**asdict(mcfg), "dtype": "bfloat16" if fast_bf16 else "float32"})
    )
    autocast = False
    n_layers = num_layers(lm)
    lora_layers = min(tcfg.lora_layers or n_layers, n_layers)
    split_at = n_layers - lora_layers
    lcfg = LoraConfig(
        r=tcfg.lora_r,
        lora_alpha=tcfg.lora_alpha,
        lora_dropout=tcfg.lora_dropout,
        target_modules=list(tcfg.lora_targets),
        layers_to_transform=list(range(split_at, n_layers)),
        bias="none",
    )
    lm = get_peft_model(lm, lcfg)
    ctok = ClassifyTokenizer(tok, tcfg.max_tokens)
    tr_texts, va_texts = texts_of(train_t, mcfg.max_input_chars), texts_of(val_t, mcfg.max_input_chars)

    # one frozen pass per distinct text (a reviewed row weighted 3 is three rows of one text)
    uniq = list(dict.fromkeys(tr_texts))
    cache = _feature_cache(mcfg, model_version, base_dtype, split_at, tcfg.max_tokens, uniq)
    if not cache.exists():
        # the frozen pass costs the same per ticket whatever the budget: on a small budget it could take the whole
        # window and leave the training a step (a 12-minute retrain on 2 cores: 532 s of features for 3,458
        # tickets). Keep it to FEATURE_SHARE of what the budget leaves, agents' weighted rows first.
        per_row = _time_features(lm, ctok, uniq, split_at, device, autocast) / max(1, len(uniq))
        after = _after_training_s(per_row, len(va_texts), n_layers, split_at, len(full_train_t), not partner, before)
        left = budget_s * 0.97 - (time.time() - t0) - after
        fit = max(min(len(uniq), MIN_FIT_TEXTS), int(FEATURE_SHARE * left / max(per_row, 1e-6)))
        if fit < len(uniq):
            log_fn(
                f"the {tcfg.time_budget_min:g}-minute budget leaves time for the features of {fit} of {len(uniq)} "
                f"distinct training tickets (~{per_row:.2f} s each): the LLM trains on those, weighted rows first"
            )
            train_t = _fit_texts(train_t, tr_texts, fit, tcfg.weight_col, tcfg.seed)
            y_train = label_matrix(train_t, sets)
            tr_texts = texts_of(train_t, mcfg.max_input_chars)
            uniq = list(dict.fromkeys(tr_texts))
            cache = _feature_cache(mcfg, model_version, base_dtype, split_at, tcfg.max_tokens, uniq)
    t_feat = time.time()
    took = cache.with_suffix(".json")  # how long computing them took: the time plan needs it on a cache hit too
    if cache.exists():
        h_u, m_u = torch.load(cache)
        try:
            feat_s = float(json.loads(took.read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):  # a cache from before the sidecar: time a sample
            feat_s = _time_features(lm, ctok, uniq, split_at, device, autocast)
        log_fn(f"layer-{split_at} features of {len(uniq)} tickets from the cache (computing them takes ~{feat_s:.0f}s)")
    else:
        with lm.disable_adapter():
            h_u, m_u = features_at(lm, ctok, uniq, split_at, 32, device, autocast)
        feat_s = time.time() - t_feat
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save((h_u, m_u), cache)
        took.write_text(json.dumps({"seconds": round(feat_s, 1)}))
        log_fn(f"layer-{split_at} features of {len(uniq)} tickets in {feat_s:.0f}s")
    at = {text: i for i, text in enumerate(uniq)}
    rows_of = torch.tensor([at[text] for text in tr_texts], dtype=torch.long)
    h_tr, m_tr = (h_u, m_u) if len(uniq) == len(tr_texts) else (h_u[rows_of], m_u[rows_of])

    heads = Heads(lm.config.hidden_size, sets).to(device)
    fresh: dict[str, list[int]] = {}
    if tcfg.init_adapter:
        summary, fresh = warm_start(lm, heads, Path(tcfg.init_adapter), sets, split_at)
        log_fn(summary)
    checkpoint = _use_checkpointing(tcfg, device, lora_layers, lm.config.hidden_size)
    model = TopModel(lm, heads, split_at, device, autocast, checkpoint=checkpoint)
    ds = _Features(h_tr, m_tr, y_train)
    if fresh and tcfg.imprint_new_labels:
        log_fn(imprint(model, ds, fresh, sets, seed=tcfg.seed))
    plan = plan_batch(tcfg.batch_size, lambda n: _probe_step(model, ds, n, device), device)
    if plan.accumulation > 1 or checkpoint:
        log_fn(
            f"{plan.per_device} tickets per step x {plan.accumulation} accumulated"
            + ("; activations recomputed in the backward pass" if checkpoint else "")
        )
    steps_per_epoch = math.ceil(len(ds) / tcfg.batch_size)
    planned = tcfg.max_steps if tcfg.max_steps > 0 else math.ceil(tcfg.epochs * steps_per_epoch)

    # the schedule runs on progress = max(steps done / planned, time used / time left): a machine that slows
    # down (shared CPUs) ends training on time with a finished schedule instead of being cut mid-way
    val_est = _after_training_s(
        feat_s / max(1, len(uniq)), len(va_texts), n_layers, split_at, len(full_train_t), not partner, before
    )
    t_train = time.time()
    window = max(1.0, budget_s * 0.97 - val_est - (t_train - t0))
    max_steps = planned
    log_fn(f"planned {planned} steps ({tcfg.epochs} epochs); {window / 60:.1f} min left for them")

    def progress(step: int) -> float:
        return max(step / max(1, planned), (time.time() - t_train) / window)

    head_params = [p for p in heads.parameters()]
    lora_params = [p for n, p in lm.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": lora_params, "lr": tcfg.lr}, {"params": head_params, "lr": tcfg.head_lr}], weight_decay=0.01
    )
    warm = max(1, int(0.06 * planned))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress(step))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    class Budget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if progress(state.global_step) >= 1.0:
                if state.global_step < planned:  # stopped early by the clock, not by the plan
                    log_fn(f"time budget reached at step {state.global_step} of {planned}")
                control.should_training_stop = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> Any:
            if logs and "loss" in logs:
                log_fn(
                    f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                    f"elapsed {time.time() - t0:.0f}s"
                )
            return control

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=plan.per_device,
            gradient_accumulation_steps=plan.accumulation,
            max_steps=max_steps,
            logging_steps=max(1, min(20, max_steps // 10)),
            save_strategy="no",
            report_to=[],
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            seed=tcfg.seed,
            disable_tqdm=True,
            label_names=["labels"],
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=ds,
            data_collator=_collate,
            optimizers=(opt, sched),
            callbacks=[Budget()],
        )
        trainer.train()
        steps_done = trainer.state.global_step
    step_s = (time.time() - t_train) / max(1, steps_done)
    train_s = time.time() - t0
    model.eval()

    # validation: LLM head, lexical partner, calibrated ensemble per field
    t_after = time.time()
    val_logits = logits_for(lm, heads, ctok, va_texts, 32, device, autocast)
    lex, calib, metrics = calibrate(
        val_logits,
        texts_of(full_train_t, mcfg.max_input_chars),
        va_texts,
        full_train_t,
        val_t,
        sets,
        log_fn,
        votes=tcfg.ticket_memory,
        lexical_settings=partner,
    )

    outd = Path(out)
    outd.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(outd))
    _halve(outd / "adapter_model.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}, str(outd / adapter_io.HEADS))
    lex.save(outd)
    memory = save_ticket_memory(outd, [*full_train_t, *val_t] if tcfg.ticket_memory else [], mcfg)
    after_training = {"seconds": round(time.time() - t_after, 1), "val_rows": len(va_texts),
             "partner_rows": len(full_train_t), "searched": not partner}  # fmt: skip
    meta = {
        "format": 1,
        "base_model": mcfg.base,
        "model_version": model_version,
        "fields": sets,
        "split_layer": split_at,
        "max_tokens": tcfg.max_tokens,
        **_calibration_meta(lex, calib),
        **_memory_meta(memory),
        "data": {
            "file": Path(data).name,
            "sha256": file_hash(data),
            "train_rows": len(full_train_t),
            "llm_train_rows": len(train_t),
            "val_rows": len(val_t),
            "val_file": Path(val).name if val else None,
            "val_fraction": None if val else tcfg.val_fraction,
            "seed": tcfg.seed,
        },
        "code_version": code_version(),
        "training": {
            "seconds": round(train_s, 1),
            "steps": steps_done,
            "planned_steps": planned,
            "step_seconds": round(step_s, 3),
            "device": device,
            "base_dtype": str(base_dtype).replace("torch.", ""),
            "per_device_batch": plan.per_device,
            "gradient_accumulation": plan.accumulation,
            "gradient_checkpointing": checkpoint,
            "after_training": after_training,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(tcfg).items()},
        },
        "validation": metrics,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    adapter_io.write_meta(outd, meta)
    log_fn(f"saved adapter to {outd} ({train_s / 60:.1f} min)")
    return meta


# The share of the time left (after the work that follows training) that the frozen feature pass may take; the
# rest is for the training steps.
FEATURE_SHARE = 0.5
MIN_FIT_TEXTS = 64


def _feature_cache(
    mcfg: ModelConfig, version: str, dtype: Any, split_at: int, max_tokens: int, texts: list[str]
) -> Path:
    """Where the frozen features of these texts are cached (by model, dtype, split layer, width and the texts)."""
    key = hashlib.sha256(json.dumps([version, str(dtype), split_at, max_tokens, texts]).encode()).hexdigest()[:16]
    return Path(mcfg.cache_dir) / "features" / f"{key}.pt"


def _partner_settings(meta: dict[str, Any], sets: dict[str, list[str]]) -> dict[str, dict[str, Any]] | None:
    """An earlier adapter's (its triage.json `meta`) lexical partner settings for the fields trained now (None:
    it has none, or there is no earlier adapter)."""
    known = (meta.get("lexical") or {}).get("settings") or {}
    return {f: known[f] for f in sets if f in known} or None


def _after_training_s(
    per_row_s: float,
    n_val: int,
    n_layers: int,
    split_at: int,
    n_partner: int,
    search: bool = True,
    before: dict[str, Any] | None = None,
) -> float:
    """Seconds the work after training takes (validation forward passes through every layer, the lexical partner,
    the memory, calibration). From what it took the adapter a retrain starts from (`before`, its meta's
    training.after_training), scaled to these row counts, with a fifth more; else from the frozen pass's seconds
    per ticket (which runs `split_at` of the layers) and the partner's fit time, with half more: that formula took
    1.1-1.4x in three 12-minute retrains on a shared 2-core machine (bench/learning_loop.py)."""
    if before and before.get("searched") == search and before.get("seconds"):
        scale = max(n_val / max(1, int(before["val_rows"])), n_partner / max(1, int(before["partner_rows"])))
        return 1.2 * float(before["seconds"]) * max(1.0, scale)
    plain = per_row_s * n_val * n_layers / max(1, split_at) + 60 + LexicalModel.fit_seconds(n_partner, search)
    return 1.5 * plain


def _fit_texts(
    tickets: Sequence[Ticket], texts: Sequence[str], n: int, weight_col: str | None, seed: int
) -> list[Ticket]:
    """The training rows of `n` distinct texts: those of weighted rows (agents' recent corrections) first, then
    others at random; a kept text keeps all its rows."""
    heavy = list(
        dict.fromkeys(t for row, t in zip(tickets, texts, strict=True) if weight_col and _weight(row, weight_col) > 1)
    )
    chosen = set(heavy)
    light = [t for t in dict.fromkeys(texts) if t not in chosen]
    rng = np.random.default_rng(seed)
    pick = heavy[:n] + [light[int(i)] for i in rng.permutation(len(light))[: max(0, n - len(heavy))]]
    keep = set(pick)
    return [row for row, t in zip(tickets, texts, strict=True) if t in keep]


def weighted_rows(tickets: Sequence[Ticket], col: str, max_rows: int | None, seed: int) -> list[Ticket]:
    """The LLM's training rows when rows carry a weight (an integer column, 1 when absent): a row weighted above 1
    (an agent's recent correction) is always kept and repeated that many times; the others fill up to `max_rows`
    distinct rows, drawn at random. The lexical partner and the validation split are unaffected."""
    weights = [_weight(t, col) for t in tickets]
    heavy = [i for i, w in enumerate(weights) if w > 1]
    light = [i for i, w in enumerate(weights) if w <= 1]
    room = len(light) if not max_rows else max(0, max_rows - len(heavy))
    if room < len(light):
        light = [int(i) for i in np.random.default_rng(seed).choice(light, room, replace=False)]
    return [tickets[i] for i in sorted(heavy + light) for _ in range(weights[i])]


def _weight(t: Ticket, col: str) -> int:
    try:
        return min(100, max(1, int(float(t.extra.get(col) or 1))))
    except (TypeError, ValueError):
        return 1


def warm_start(
    lm: Any, heads: Any, d: Path, sets: dict[str, list[str]], split_at: int
) -> tuple[str, dict[str, list[int]]]:
    """Load an earlier adapter into a fresh LoRA model and heads: every LoRA weight, and each head's rows for the
    labels that adapter knew; a summary line and, per field, the rows of the labels it did not know (for
    models/imprint.py)."""
    import torch
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from safetensors.torch import load_file

    meta = adapter_io.read_meta(d)
    if int(meta.get("split_layer", split_at)) != split_at:
        raise ValueError(f"{d}: LoRA from layer {meta.get('split_layer')}, this recipe from layer {split_at}")
    loaded = set_peft_model_state_dict(lm, load_peft_weights(str(d), device="cpu"))
    unexpected = list(getattr(loaded, "unexpected_keys", None) or [])
    if unexpected:  # a different LoRA shape: starting "warm" would silently start from scratch
        raise ValueError(f"{d}: {len(unexpected)} LoRA weights do not fit this recipe, e.g. {unexpected[0]}")
    old = load_file(str(d / adapter_io.HEADS))
    kept, fresh = 0, []
    rows: dict[str, list[int]] = {}
    with torch.no_grad():
        for f, labels in sets.items():
            before = {lab: i for i, lab in enumerate(meta["fields"].get(f, []))}
            w, b = old.get(f"heads.{f}.weight"), old.get(f"heads.{f}.bias")
            layer = heads.heads[f]
            for j, lab in enumerate(labels):
                if w is not None and b is not None and lab in before:
                    layer.weight[j] = w[before[lab]].to(layer.weight)
                    layer.bias[j] = b[before[lab]].to(layer.bias)
                    kept += 1
                else:
                    fresh.append(f"{f}:{lab}")
                    rows.setdefault(f, []).append(j)
    summary = f"warm start from {d.name}: LoRA weights and {kept} head rows; new: {', '.join(fresh) or 'none'}"
    return summary, rows


def _use_checkpointing(tcfg: TrainConfig, device: str, lora_layers: int, hidden: int) -> bool:
    """The configured choice, else on for a GPU training many layers or a wide (1B+) model, where activations are
    what runs out of memory; off on a CPU (memory is plentiful there and recomputing costs a third more time)."""
    if tcfg.gradient_checkpointing is not None:
        return tcfg.gradient_checkpointing
    return device.startswith("cuda") and (lora_layers > 8 or hidden >= 2048)


def _time_features(lm: Any, ctok: Any, texts: Sequence[str], split_at: int, device: str, autocast: bool) -> float:
    """Seconds computing the frozen features of all `texts` would take, from a timed sample of 32."""
    from models.classifier import features_at

    sample = list(texts[:32])
    if not sample:
        return 0.0
    t0 = time.time()
    with lm.disable_adapter():
        features_at(lm, ctok, sample, split_at, 32, device, autocast)
    return (time.time() - t0) * len(texts) / len(sample)


def _probe_step(model: Any, ds: _Features, n: int, device: str) -> None:
    """One forward + backward of the n widest training tickets (the most memory a step will need), gradients
    discarded."""
    import torch

    widest = sorted(range(len(ds)), key=lambda i: -int(ds.mask[i].sum()))[:n]
    batch = _collate([ds[i] for i in widest])
    out = model(**{k: v.to(device) for k, v in batch.items()})
    out["loss"].backward()
    model.zero_grad(set_to_none=True)
    del out
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def save_ticket_memory(outd: Path, tickets: Sequence[Ticket], mcfg: ModelConfig) -> TicketMemory | None:
    """Keep the training tickets (text, labels, reply) in the adapter: reply suggestions and neighbour votes.
    Any memory already in `outd` goes first, so none is left behind when there is nothing to keep."""
    for name in (MEMORY_FILE, LEGACY_MEMORY_FILE):
        (outd / name).unlink(missing_ok=True)
    memory = ticket_memory(tickets, mcfg) if tickets else None
    if memory is not None:
        memory.save(outd)
    return memory


def ticket_memory(tickets: Sequence[Ticket], mcfg: ModelConfig) -> TicketMemory | None:
    return TicketMemory.build(
        [t.id for t in tickets],
        texts_of(tickets, mcfg.max_input_chars),
        [t.reply for t in tickets],
        [t.labels for t in tickets],
    )


def _memory_meta(memory: TicketMemory | None) -> dict[str, Any]:
    return {"ticket_memory": {"rows": len(memory) if memory else 0, "replies": memory.replies if memory else 0}}


def _halve(path: Path) -> None:
    """Store LoRA weights in fp16 (half the size; peft casts them back to fp32 on load)."""
    import torch
    from safetensors.torch import load_file, save_file

    if path.exists():
        t = load_file(str(path))
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in t.items()}, str(path))


def _calibration_meta(lex: LexicalModel, calib: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """triage.json's record of what `calibrate` fitted (written by train and by recalibrate)."""
    return {"calibration": calib, "lexical": {"kind": lex.kind, "settings": lex.settings}}


def calibrate(
    val_logits: dict[str, Any],
    tr_texts: Sequence[str],
    va_texts: Sequence[str],
    train_t: Sequence[Ticket],
    val_t: Sequence[Ticket],
    sets: dict[str, list[str]],
    log_fn: Any = print,
    votes: bool = True,
    lexical_settings: dict[str, dict[str, Any]] | None = None,
) -> tuple[Any, dict[str, dict[str, Any]], dict[str, Any]]:
    """Fit the lexical partner (word + char n-grams; C and class weighting chosen on validation, or as in
    `lexical_settings` per field) and the neighbour votes' agreement maps (validation tickets against a memory of
    the training rows only), then per field the LLM temperature and the ensemble weights on validation; report
    validation metrics of each variant."""

    y_val = label_matrix(val_t, sets)
    lex = LexicalModel.fit_tuned(
        tr_texts,
        {f: [t.labels.get(f) for t in train_t] for f in sets},
        va_texts,
        {f: [t.labels.get(f) for t in val_t] for f in sets},
        class_weights=(None, "balanced"),
        char=True,
        fixed=lexical_settings,
    )
    lex_val = lex.logprobs(va_texts)
    # votes for validation tickets come from the training rows only (replies are not needed for votes)
    memory = (
        TicketMemory.build([t.id for t in train_t], tr_texts, [None] * len(train_t), [t.labels for t in train_t])
        if votes
        else None
    )
    hits = memory.search(va_texts, neighbours.K * 2) if memory is not None else []
    calib: dict[str, dict[str, Any]] = {}
    metrics: dict[str, Any] = {}
    for i, (f, labs) in enumerate(sets.items()):
        keep = y_val[:, i] >= 0
        yv = y_val[keep, i]
        llm_lp = log_softmax(np.asarray(val_logits[f], dtype=np.float64))[keep]
        lex_lp = align(lex_val[f], lex.classes[f], labs)[keep]
        votes_lp, curve = None, None
        if memory is not None:
            kept = [h for h, k in zip(hits, keep, strict=True) if k]
            row_labels = memory.labels_of(f)
            curve = list(neighbours.agreement(kept, row_labels, [labs[j] for j in yv]))
            votes_lp = neighbours.vote_logprobs(kept, row_labels, labs, curve)
        a_t, _ = fit_weights(llm_lp, None, yv)
        w = fit_mixture_f1([m for m in (llm_lp, lex_lp, votes_lp) if m is not None], yv)
        a, b, g = w[0], w[1], (w[2] if votes_lp is not None else 0.0)
        scores = FieldScores(llm_lp, lex_lp, votes_lp, (a, b, g), a_t, None)
        ens = scores.before_top_label()
        top = list(fit_top_label(ens, yv))
        scores = replace(scores, top_label=top)
        calib[f] = {"llm_weight": a, "lexical_weight": b, "llm_temperature_weight": a_t, "top_label": top}
        if curve is not None:
            calib[f].update(neighbour_weight=g, neighbours={"k": neighbours.K, "agreement": curve})
        rep = {
            "llm_raw": classification_report(np.exp(llm_lp), yv, labs),
            "llm_calibrated": classification_report(scores.llm_calibrated(), yv, labs),
            "lexical": classification_report(np.exp(lex_lp), yv, labs),
            **({"neighbours": classification_report(np.exp(votes_lp), yv, labs)} if votes_lp is not None else {}),
            "ensemble_before_top_label": classification_report(ens, yv, labs),
            "ensemble": classification_report(scores.probs(), yv, labs),
        }
        metrics[f] = {k: {m: v[m] for m in ("accuracy", "macro_f1", "ece")} for k, v in rep.items()}
        log_fn(
            f"val {f}: "
            + "; ".join(f"{k} F1 {v['macro_f1']:.3f} ECE {v['ece']:.3f}" for k, v in metrics[f].items())
            + f"; weights llm {a:.2f} lexical {b:.2f} neighbours {g:.2f}"
        )
    return lex, calib, metrics


def recalibrate(
    adapter_dir: str | Path, data: str | Path, mcfg: ModelConfig, log_fn: Any = print, memory: bool = True
) -> dict[str, Any]:
    """Refit the lexical partner, the ticket memory (unless `memory` is false) and the calibration of an adapter on
    its own train / validation split (the LLM weights are unchanged)."""
    from models.inference import Triager

    d = Path(adapter_dir)
    meta = adapter_io.read_meta(d)
    want = meta.get("data", {}).get("sha256")
    if want and file_hash(data) != want:  # another file would give another split: validation rows leak into fits
        raise DataError(
            f"{data} is not this adapter's training file (sha256 differs from {want[:12]}…, "
            f"trained on {meta.get('data', {}).get('file')}); pass the file it was trained on, or retrain"
        )
    train_t, val_t = training_split(meta, data)
    tri = Triager.load(ModelConfig(**{**mcfg.__dict__, "adapter": str(d)}))
    tr_texts, va_texts = texts_of(train_t, mcfg.max_input_chars), texts_of(val_t, mcfg.max_input_chars)
    comps = tri.classify_components(va_texts)
    lex, calib, metrics = calibrate(
        {f: c.llm for f, c in comps.items()}, tr_texts, va_texts, train_t, val_t, meta["fields"], log_fn, memory
    )
    lex.save(d)
    if memory:
        meta.pop("reply_memory", None)
        meta.update(_memory_meta(save_ticket_memory(d, [*train_t, *val_t], mcfg)))
    meta.pop("lexical_C", None)  # older adapters' copy of lexical.settings' C values
    meta.update({**_calibration_meta(lex, calib), "validation": metrics})
    adapter_io.write_meta(d, meta)
    return meta
