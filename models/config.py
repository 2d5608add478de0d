"""Configuration dataclasses for the triage model: base, adapter, runtime, training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BUNDLED_BASE = "bundled:smollm2-135m-instruct"


@dataclass
class ModelConfig:
    """What to load and how to run it (mapped from the service's ModelSettings by the CLI / workers)."""

    base: str = BUNDLED_BASE
    adapter: str | None = None  # None = the shipped default adapter (models/default_adapter)
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path = field(default_factory=lambda: Path("var/models"))
    batch_size: int = 16
    max_new_tokens: int = 160
    max_input_chars: int = 8000
    threads: int | None = None  # torch intra-op threads on CPU; None = physical cores available to us
    # "retrieve": the adapter's past reply to a similar ticket when one exists, else an LLM draft;
    # "generate": always an LLM draft, shown that past reply as an example (see models/ticket_memory.py).
    reply_mode: str = "retrieve"
    # mean of word and character TF-IDF cosines; below it a past reply scored no better than a draft
    reply_min_similarity: float = 0.25
    # most rows the ticket memory keeps as reviewed tickets are added (Triager.remember): the least recently
    # added go first, training rows before reviews; 0 = no bound
    memory_max_rows: int = 50000
    # Drafting (models/drafting.py): None = a static, compiled KV cache on CUDA, the natural shapes elsewhere; the
    # batch sizes and prompt lengths a static batch is padded to (each pair compiled once at worker start)
    static_drafting: bool | None = None
    draft_batch_size: int | None = None  # None = batch_size
    draft_batch_buckets: tuple[int, ...] = (8, 32, 64)
    draft_prompt_buckets: tuple[int, ...] = (384, 768)
    # Never reach the network when loading: a hub id must already be in the local Hugging Face cache (the model is an
    # artefact baked into the image or a volume, not a download). False lets transformers download missing files.
    offline: bool = True
    # transformers >= 5 swaps in "hub kernels" (downloaded from the Hub) by default; an air-gapped GPU site fails at the
    # first training step with them on. Off unless the operator has the `kernels` cache and wants them.
    hub_kernels: bool = False


@dataclass
class TrainConfig:
    """Training settings; the defaults fit ~3,000 short tickets in 45 minutes on a 2-core CPU."""

    fields: list[str] | None = None  # None = infer label columns from the data
    reply_field: str | None = "reply"
    subject_col: str = "subject"
    body_col: str = "body"
    id_col: str = "id"
    val_fraction: float = 0.15
    max_tokens: int = 64  # ticket tokens seen by the classifier (measured: CPU cost is linear in it)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_layers: int | None = 4  # LoRA only in the top N layers (None = all); the rest is frozen and cached
    # recompute each trained layer's activations in the backward pass; None = on for a GPU training > 8 layers or a
    # 1B+ model, off on CPU (models/train.py)
    gradient_checkpointing: bool | None = None
    epochs: float = 3.0
    lr: float = 5e-4
    head_lr: float = 2e-3
    batch_size: int = 16
    max_steps: int = -1
    time_budget_min: float = 40.0
    max_train_rows: int | None = 3000  # LLM rows (the lexical partner always sees all training rows)
    # keep the training tickets (text, labels, reply) in the adapter: past replies and neighbour votes
    # (models/ticket_memory.py, models/neighbours.py)
    ticket_memory: bool = True
    seed: int = 13
    # an integer column: a row's repeat count in the LLM's training rows (rows above 1 are always kept when
    # max_train_rows subsamples); the learning loop weights agents' recent corrections this way. None = all 1.
    weight_col: str | None = None
    # start from an earlier adapter of the same base and recipe (its LoRA weights, and its heads' rows for the labels
    # it knew; new labels start fresh) instead of from scratch: a retrain within a short budget then refines what
    # the live adapter learnt rather than relearning it (service/learning/retrain.py). None = from scratch.
    init_adapter: str | None = None
    # with init_adapter: a new label's head row starts from its tickets' pooled features (models/imprint.py)
    # rather than a random row far behind the warm ones
    imprint_new_labels: bool = True
    # impact x urgency -> priority (ServiceNow style); used only when those columns are present
    priority_matrix: dict[str, dict[str, str]] | None = None
