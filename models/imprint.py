"""A new label's head row imprinted from its training tickets before a warm-started retrain trains.

A warm start keeps every row the live adapter learnt; a label agents started using since has no row to keep and
would start from a random one, far behind labels trained for epochs: within a retrain's budget (a fraction of an
epoch on a CPU) the LLM head rarely learnt it (bench/learning_loop.py: none of the next 10 printer tickets). Weight
imprinting (Qi et al., "Low-Shot Learning with Imprinted Weights", CVPR 2018) gives the row a start from the
pooled features the model already computes: its direction is the mean of the label's tickets minus the mean of the
others', scaled so the two groups' mean logits are GAP apart, and its bias puts the label level with the best known
label on its own tickets, so training begins from a tie rather than from nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Logit gap between a new label's tickets and the others (e^4: about 55 times likelier on its own tickets).
GAP = 4.0
PER_LABEL, OTHERS, BATCH = 64, 256, 16


def imprint(model: Any, ds: Any, fresh: dict[str, list[int]], sets: dict[str, list[str]], seed: int = 0) -> str:
    """Set each fresh (new) label's head row from the pooled features of up to PER_LABEL of its training rows
    against OTHERS rows of known labels; `model` is models/classifier.py's TopModel, `ds` the training features
    (hidden, mask, labels: one column per field in model.heads.order), `sets` the label names. A summary line."""
    import torch

    rng = np.random.default_rng(seed)
    done = []
    for f, rows in fresh.items():
        col = model.heads.order.index(f)
        y = ds.labels[:, col]
        known = np.flatnonzero((y >= 0) & ~np.isin(y, rows))
        if not len(known):
            continue
        others = _pool(model, ds, _pick(known, OTHERS, rng))
        layer = model.heads.heads[f]
        keep = [j for j in range(layer.out_features) if j not in rows]
        for j in rows:
            mine = np.flatnonzero(y == j)
            if not len(mine):
                continue
            own = _pool(model, ds, _pick(mine, PER_LABEL, rng))
            direction = own.mean(0) - others.mean(0)
            norm2 = float(direction @ direction)
            if norm2 <= 1e-12:
                continue
            with torch.no_grad():
                best_known = (own @ layer.weight[keep].float().T + layer.bias[keep].float()).max(1).values.mean()
                w = direction * (GAP / norm2)
                layer.weight[j] = w.to(layer.weight)
                layer.bias[j] = (best_known - own.mean(0) @ w).to(layer.bias)
            done.append(f"{f}:{sets[f][j]} from {min(len(mine), PER_LABEL)} of its {len(mine)} tickets")
    return f"imprinted new label rows: {', '.join(done) or 'none'}"


def _pick(rows: np.ndarray, n: int, rng: np.random.Generator) -> Sequence[int]:
    return sorted(rng.choice(rows, min(n, len(rows)), replace=False).tolist())


def _pool(model: Any, ds: Any, rows: Sequence[int]) -> Any:
    """Pooled vectors (float32, on the model's device) of training rows, in batches, without gradients."""
    import torch

    from models.classifier import autocast_ctx

    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(rows), BATCH):
                idx = list(rows[s : s + BATCH])
                mask = ds.mask[idx]
                w = min(mask.shape[1], -(-int(mask.sum(1).max()) // 8) * 8)
                hidden = ds.hidden[idx][:, :w].to(model.device_name)
                with autocast_ctx(model.device_name, model.autocast):
                    out.append(model.pooled(hidden, mask[:, :w].to(model.device_name)).float())
    finally:
        model.train(was_training)
    return torch.cat(out)
