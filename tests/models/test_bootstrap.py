"""The paired bootstrap behind evaluate's model-vs-TF-IDF margin: same macro-F1 as the report, honest intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from models.calibration import bootstrap_margin, ece, weighted_macro_f1


def onehot(pred: np.ndarray, k: int, conf: float = 0.8) -> np.ndarray:
    """Probabilities with `conf` on the predicted label and the rest spread evenly."""
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_weighted_macro_f1_with_unit_weights_is_the_reports_macro_f1() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)  # class 4 of 5 is never present ...
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))  # ... nor predicted: it counts as 0
    want = f1_score(y, pred, labels=list(range(5)), average="macro", zero_division=0)
    assert abs(weighted_macro_f1(pred, y, 5, np.ones((1, 200)))[0] - want) < 1e-12
    twice = np.concatenate([np.full(100, 2.0), np.zeros(100)])[None, :]  # a resample: the first half drawn twice
    want_half = f1_score(y[:100], pred[:100], labels=list(range(5)), average="macro", zero_division=0)
    assert abs(weighted_macro_f1(pred, y, 5, twice)[0] - want_half) < 1e-12


def test_identical_systems_have_no_margin() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1] * 10)
    p = onehot((y + (np.arange(80) % 3 == 0)) % 3, 3)
    b = bootstrap_margin(p, p.copy(), y, n_boot=300)
    assert b["macro_f1_margin"] == 0 and b["macro_f1_margin_ci95"] == [0.0, 0.0]
    assert b["share_of_resamples_margin_at_least"] == {"0": 1.0, "0.03": 0.0}
    assert b["model_ece"] == ece(p, y) and b["model_ece_ci95"][0] <= b["model_ece"] <= b["model_ece_ci95"][1]


def test_a_clear_margin_is_certain_and_a_one_ticket_margin_is_not() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    base = onehot(np.where(rng.random(400) < 0.5, y, rng.integers(0, 3, 400)), 3)
    clear = bootstrap_margin(onehot(y, 3), base, y, n_boot=500)
    assert clear["macro_f1_margin"] > 0.2 and clear["macro_f1_margin_ci95"][0] > 0.1
    assert clear["share_of_resamples_margin_at_least"]["0.03"] == 1.0

    # the two systems differ on two tickets only, one right each: the sign of the margin is a coin toss
    pred = y.copy()
    pred[:40] = (y[:40] + 1) % 3  # both wrong on these
    model, other = pred.copy(), pred.copy()
    model[0], other[1] = y[0], y[1]
    tie = bootstrap_margin(onehot(model, 3), onehot(other, 3), y, n_boot=500)
    lo, hi = tie["macro_f1_margin_ci95"]
    assert lo < 0 < hi and 0.2 < tie["share_of_resamples_margin_at_least"]["0"] < 0.95
