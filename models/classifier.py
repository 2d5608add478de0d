"""The classification model: a LoRA-tuned decoder (top layers) + one linear head per label field on pooled
hidden states. The bottom layers are frozen, so their outputs can be computed once and cached for training."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models.backbone import ClassifyTokenizer, embed, num_layers, pool, run_layers


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_ctx(device: str, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


class Heads(nn.Module):
    def __init__(self, hidden: int, fields: dict[str, list[str]], dropout: float = 0.1) -> None:
        super().__init__()
        self.order = list(fields)
        self.drop = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({f: nn.Linear(2 * hidden, len(labels)) for f, labels in fields.items()})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.drop(pooled.float())
        return {f: self.heads[f](x) for f in self.order}


class TopModel(nn.Module):
    """Training wrapper: cached hidden states at `split` -> top layers (LoRA) -> pooled -> heads -> loss."""

    def __init__(
        self, lm: Any, heads: Heads, split: int, device: str, autocast: bool, checkpoint: bool = False
    ) -> None:
        super().__init__()
        self.lm = lm
        self.heads = heads
        self.split = split
        self.n_layers = num_layers(lm)
        self.device_name = device
        self.autocast = autocast
        self.checkpoint = checkpoint  # recompute each layer in the backward pass (models/backbone.py run_layers)

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None, **_: Any
    ) -> dict[str, Any]:
        with autocast_ctx(self.device_name, self.autocast):
            logits = self.heads(self.pooled(hidden, attention_mask))
        out: dict[str, Any] = {"logits": torch.cat([logits[f] for f in self.heads.order], dim=-1)}
        if labels is not None:
            loss = sum(
                nn.functional.cross_entropy(logits[f].float(), labels[:, i], ignore_index=-100)
                for i, f in enumerate(self.heads.order)
            )
            out["loss"] = loss
        return out

    def pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Cached hidden states -> top layers (LoRA) -> the pooled vector the heads read."""
        h = run_layers(
            self.lm, hidden.to(self._dtype()), attention_mask, self.split, self.n_layers, True, self.checkpoint
        )
        return pool(h, attention_mask)

    def _dtype(self) -> torch.dtype:
        return next(self.lm.parameters()).dtype


@torch.inference_mode()
def features_at(
    lm: Any, ctok: ClassifyTokenizer, texts: Sequence[str], split: int, batch_size: int, device: str, autocast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states entering layer `split` for every text, padded to one width, stored in bf16."""
    ids, mask = ctok(texts)
    width = ids.shape[1]
    dim = lm.config.hidden_size
    out = torch.zeros((len(texts), width, dim), dtype=torch.bfloat16)
    order = sorted(range(len(texts)), key=lambda i: int(mask[i].sum()))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        w = min(width, -(-int(mask[idx].sum(1).max()) // 8) * 8)
        bi, bm = ids[idx, :w].to(device), mask[idx, :w].to(device)
        with autocast_ctx(device, autocast):
            h = embed(lm, bi)
            if split > 0:
                h = run_layers(lm, h, bm, 0, split, False)
        out[idx, :w] = h.to("cpu", torch.bfloat16)
    return out, mask


@torch.inference_mode()
def logits_for(
    lm: Any, heads: Heads, ctok: ClassifyTokenizer, texts: Sequence[str], batch_size: int, device: str, autocast: bool
) -> dict[str, torch.Tensor]:
    """Full forward (all layers, adapter active) -> per-field logits (float32, CPU)."""
    ids, mask = ctok(texts)
    n = num_layers(lm)
    width = ids.shape[1]
    order = sorted(range(len(texts)), key=lambda i: int(mask[i].sum()))
    res: dict[str, list[tuple[int, torch.Tensor]]] = {f: [] for f in heads.order}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        w = min(width, -(-int(mask[idx].sum(1).max()) // 8) * 8)
        bi, bm = ids[idx, :w].to(device), mask[idx, :w].to(device)
        with autocast_ctx(device, autocast):
            h = run_layers(lm, embed(lm, bi), bm, 0, n, True)
            lg = heads(pool(h, bm))
        for f in heads.order:
            res[f].extend(zip(idx, lg[f].float().cpu(), strict=True))
    return {f: torch.stack([t for _, t in sorted(v, key=lambda x: x[0])]) for f, v in res.items()}
