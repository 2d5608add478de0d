"""A new label's head row imprinted from its tickets' pooled features (models/imprint.py): level with the best known
label on its own tickets, GAP logits lower on the others, and ahead of a random row on tickets like its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.classifier import Heads, TopModel
from models.imprint import GAP, imprint
from models.train import _Features


def _model(hidden: int = 32) -> TopModel:
    """A random two-layer Llama under heads whose known rows are large, as trained rows are; "new" stays fresh."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    lm = LlamaForCausalLM(config).eval()
    heads = Heads(hidden, {"queue": ["new", "a", "b", "c"]})
    with torch.no_grad():
        heads.heads["queue"].weight[1:] *= 20
    return TopModel(lm, heads, 1, "cpu", False)


def _tickets(n_new: int, n_old: int, hidden: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Hidden states entering the top layer: the new label's tickets share a direction the others lack."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_new + n_old, 8, hidden, generator=g)
    x[:n_new] += 1.5 * torch.randn(hidden, generator=torch.Generator().manual_seed(99))
    labels = np.array([[0]] * n_new + [[1 + i % 3] for i in range(n_old)], dtype=np.int64)
    return x, torch.ones(n_new + n_old, 8, dtype=torch.long), labels


def _logits(model: TopModel, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.heads.heads["queue"](model.pooled(hidden, mask).float())


def test_the_new_row_starts_level_with_the_best_known_label_on_its_tickets() -> None:
    model = _model()
    hidden, mask, labels = _tickets(20, 60)
    line = imprint(model, _Features(hidden, mask, labels), {"queue": [0]}, {"queue": ["new", "a", "b", "c"]})
    assert "queue:new from 20 of its 20 tickets" in line
    z = _logits(model, hidden, mask)
    own, others = z[:20], z[20:]
    assert float(own[:, 0].mean()) == pytest.approx(float(own[:, 1:].max(1).values.mean()), abs=1e-4)
    assert float(own[:, 0].mean() - others[:, 0].mean()) == pytest.approx(GAP, abs=1e-4)
    assert model.training  # left as it was found (TopModel starts in training mode)


def test_an_imprinted_row_finds_unseen_tickets_of_its_label_better_than_a_random_one() -> None:
    hidden, mask, labels = _tickets(20, 60)
    unseen_hidden, unseen_mask, _ = _tickets(30, 0, seed=7)  # the same kind of ticket, not used to imprint
    ranks = {}
    for imprinted in (False, True):
        model = _model()
        if imprinted:
            imprint(model, _Features(hidden, mask, labels), {"queue": [0]}, {"queue": ["new", "a", "b", "c"]})
        z = _logits(model, unseen_hidden, unseen_mask)
        ranks[imprinted] = float((z[:, 0] - z[:, 1:].max(1).values).mean())
    assert ranks[True] > ranks[False] + 3.0, ranks  # a fresh row starts far behind the trained ones


def test_nothing_to_imprint_from_leaves_the_heads_alone() -> None:
    model = _model()
    hidden, mask, labels = _tickets(0, 12)
    before = model.heads.heads["queue"].weight.clone()
    assert imprint(model, _Features(hidden, mask, labels), {"queue": [0]}, {"queue": ["new", "a", "b", "c"]}).endswith(
        "none"
    )
    assert torch.equal(before, model.heads.heads["queue"].weight)
