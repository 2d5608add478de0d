"""Calibration and metrics: temperature / ensemble weights fitted on validation data, ECE, macro-F1,
precision at coverage."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def combine(llm_logp: np.ndarray, lex_logp: np.ndarray | None, a: float, b: float) -> np.ndarray:
    """Calibrated log-linear ensemble of two members: softmax(a*log p_llm + b*log p_lex)."""
    return mix([llm_logp, lex_logp], [a, b])


def mix(members: Sequence[np.ndarray | None], weights: Sequence[float]) -> np.ndarray:
    """Calibrated log-linear ensemble: softmax(sum of w_i * log p_i); a member that is None or weighted 0 is left
    out (all weights 0: uniform)."""
    z: Any = 0.0
    for m, w in zip(members, weights, strict=True):
        if m is not None and w:
            z = z + w * m
    if isinstance(z, float):
        first = next(m for m in members if m is not None)
        z = np.zeros_like(first)
    return np.exp(log_softmax(z))


def nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_weights(llm_logp: np.ndarray, lex_logp: np.ndarray | None, y: np.ndarray) -> tuple[float, float]:
    """Grid + refine search of (a, b) >= 0 minimising validation NLL (b = 0 when no lexical model)."""
    grid_a = np.concatenate([np.linspace(0.0, 3.0, 31)])
    grid_b = np.linspace(0.0, 3.0, 31) if lex_logp is not None else np.array([0.0])
    best = (1.0, 0.0, float("inf"))
    for a in grid_a:
        for b in grid_b:
            if a == 0 and b == 0:
                continue
            v = nll(combine(llm_logp, lex_logp, a, b), y)
            if v < best[2]:
                best = (float(a), float(b), v)
    a0, b0, _ = best
    for a in np.linspace(max(0, a0 - 0.1), a0 + 0.1, 11):
        for b in np.linspace(max(0, b0 - 0.1), b0 + 0.1, 11) if lex_logp is not None else [0.0]:
            if a == 0 and b == 0:
                continue
            v = nll(combine(llm_logp, lex_logp, a, b), y)
            if v < best[2]:
                best = (float(a), float(b), v)
    return best[0], best[1]


def macro_f1(pred: np.ndarray, y: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = float(np.sum((pred == c) & (y == c)))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = float(np.sum((pred != c) & (y == c)))
        if tp + fp + fn > 0:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def fit_weights_f1(
    llm_logp: np.ndarray, lex_logp: np.ndarray, y: np.ndarray, tolerance: float = 0.005
) -> tuple[float, float]:
    """`fit_mixture_f1` for the LLM and the lexical partner: (a, b)."""
    a, b = fit_mixture_f1([llm_logp, lex_logp], y, tolerance)
    return a, b


def fit_mixture_f1(
    members: Sequence[np.ndarray], y: np.ndarray, tolerance: float = 0.005, step: float = 0.05
) -> tuple[float, ...]:
    """Mixing direction (each member's share, on a grid of the simplex) chosen by validation macro-F1, then one
    temperature by NLL, so the probabilities stay calibrated while the argmax serves the metric that decides routing
    quality. Returns one weight per member.

    Directions within `tolerance` of the best validation macro-F1 count as tied (on a few hundred validation
    tickets macro-F1 moves by more than that between resamples); among them the one with the lowest NLL wins."""
    k = members[0].shape[1]
    n = round(1 / step)
    rows = []
    for parts in itertools.product(range(n + 1), repeat=len(members) - 1):
        if sum(parts) > n:
            continue
        w = [p / n for p in parts] + [(n - sum(parts)) / n]
        z: np.ndarray = np.sum([wi * m for wi, m in zip(w, members, strict=True)], axis=0)
        s, _ = fit_weights(z, None, y)
        rows.append((w, s, macro_f1(z.argmax(1), y, k), nll(combine(z, None, s, 0), y)))
    best = max(r[2] for r in rows)
    w, s, _, _ = min((r for r in rows if r[2] >= best - tolerance), key=lambda r: r[3])
    return tuple(float(s * wi) for wi in w)


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 1e-9, 1 - 1e-9)
    return np.asarray(np.log(c) - np.log1p(-c))


def fit_platt(x: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    """Logistic curve P(ok | x) = sigmoid(slope * x + bias) by log-loss; slope kept > 0 (a larger x never means less
    trust: a decreasing fit on few rows is noise), (1, 0) when the fit would decrease."""
    from scipy.optimize import minimize

    def loss(t: np.ndarray) -> float:
        q = np.clip(platt(x, t[0], t[1]), 1e-9, 1 - 1e-9)
        return float(-np.mean(ok * np.log(q) + (1 - ok) * np.log(1 - q)))

    res = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead")
    slope, bias = (float(v) for v in res.x)
    return (slope, bias) if slope > 0 else (1.0, 0.0)


def platt(x: np.ndarray, slope: float, bias: float) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-(slope * x + bias))))


def fit_top_label(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling of the top label's confidence: (slope, bias) on its log-odds minimising the log-loss of
    "the chosen label is right" on validation data. Two parameters, so a few hundred tickets fit it without
    the overfitting of binning or isotonic maps; it corrects what one temperature cannot (a field that is
    over-confident at the top and under-confident lower down)."""
    return fit_platt(_logit(p.max(1)), (p.argmax(1) == y).astype(float))


TOP_FLOOR = 0.005


def top_label(p: np.ndarray, slope: float, bias: float) -> np.ndarray:
    """Apply fit_top_label's map: the top label's probability becomes the calibrated confidence, reached by a
    per-ticket temperature on the whole distribution, so the ranking of every label is kept and labels that were
    apart stay apart (a tie only where the model was indifferent). The chosen label never changes; a confidence the
    map puts at or below 1/k (no temperature reaches it) becomes 1/k + TOP_FLOOR.

    (It used to scale the other labels proportionally and floor the top at the runner-up plus 1e-9 where the map
    asked for less: the top two then looked like a coin flip while the label came from the ranking.)"""
    n, k = p.shape
    if k < 2 or not n:
        return p.copy()
    c = p.max(1)
    target = platt(_logit(c), slope, bias)
    # a map below 1/k (an extrapolation: no ranking is worse than uniform) keeps a visible half-point preference
    # (but never above the model's own confidence: an indifferent model stays indifferent)
    target = np.clip(target, np.minimum(c, 1.0 / k + TOP_FLOOR), 1.0 - 1e-9)
    logp = np.log(np.clip(p, 1e-300, None))
    # bisection on log-temperature, all tickets at once: the top probability falls monotonically as T grows
    lo, hi = np.full(n, -12.0), np.full(n, 12.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        top = _softmax_rows(logp / np.exp(mid)[:, None]).max(1)
        higher = top > target
        lo = np.where(higher, mid, lo)
        hi = np.where(higher, hi, mid)
    return _softmax_rows(logp / np.exp((lo + hi) / 2)[:, None])


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(1, keepdims=True))


def with_top_label(p: np.ndarray, top: Sequence[float] | None) -> np.ndarray:
    """`top_label` with an adapter's stored (slope, bias); unchanged for adapters calibrated before it existed."""
    return top_label(p, float(top[0]), float(top[1])) if top else p


@dataclass
class FieldScores:
    """One field's ensemble: each member's log-probabilities (None when the adapter lacks it), their weights
    (LLM, lexical partner, neighbour votes), the LLM's own temperature weight and the top-label map."""

    llm: np.ndarray
    lexical: np.ndarray | None
    neighbours: np.ndarray | None
    weights: tuple[float, float, float]
    llm_alone: float
    top_label: Sequence[float] | None

    def before_top_label(self) -> np.ndarray:
        return mix([self.llm, self.lexical, self.neighbours], self.weights)

    def probs(self) -> np.ndarray:
        """The calibrated probabilities the product uses."""
        return with_top_label(self.before_top_label(), self.top_label)

    def llm_calibrated(self) -> np.ndarray:
        return mix([self.llm], [self.llm_alone])


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            out.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "n": int(m.sum()),
                    "confidence": float(conf[m].mean()),
                    "accuracy": float(correct[m].mean()),
                }
            )
    return out


def coverage_curve(
    p: np.ndarray, y: np.ndarray, points: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
) -> dict[str, float]:
    """Precision (accuracy) on the most confident fraction of tickets."""
    order = np.argsort(-p.max(1), kind="stable")
    correct = (p.argmax(1) == y)[order]
    out = {}
    for c in points:
        k = max(1, round(c * len(y)))
        out[f"{c:.1f}"] = float(correct[:k].mean())
    return out


def weighted_macro_f1(pred: np.ndarray, y: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """Macro-F1 over all k classes (0 for a class neither predicted nor present, as classification_report counts
    it) for each row of `weights` (tickets' multiplicities: a bootstrap resample per row)."""
    hit_pred, hit_true = np.eye(k)[pred], np.eye(k)[y]
    tp = weights @ (hit_pred * hit_true)
    fp = weights @ (hit_pred * (1 - hit_true))
    fn = weights @ ((1 - hit_pred) * hit_true)
    den = 2 * tp + fp + fn
    return np.asarray(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0).mean(1))


def bootstrap_margin(
    p: np.ndarray, base: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 1
) -> dict[str, Any]:
    """Paired bootstrap over tickets: the model's macro-F1 margin over a baseline and the model's ECE with 95%
    intervals, and how often the margin is at least 0 / 3 points. One test set of a few hundred tickets moves
    macro-F1 by a point or more; this says how much of a measured margin is that noise."""
    n, k = p.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n))
    counts = np.zeros((n_boot + 1, n))
    counts[0] = 1.0  # row 0: the test set itself, the others one resample each
    np.add.at(counts, (np.arange(1, n_boot + 1)[:, None], idx), 1.0)
    margins = weighted_macro_f1(p.argmax(1), y, k, counts) - weighted_macro_f1(base.argmax(1), y, k, counts)
    diff = margins[1:]
    eces = np.array([ece(p[i], y[i]) for i in idx])
    return {
        "macro_f1_margin": float(margins[0]),
        "macro_f1_margin_ci95": [float(v) for v in np.percentile(diff, [2.5, 97.5])],
        "share_of_resamples_margin_at_least": {"0": float((diff >= 0).mean()), "0.03": float((diff >= 0.03).mean())},
        "model_ece": ece(p, y),
        "model_ece_ci95": [float(v) for v in np.percentile(eces, [2.5, 97.5])],
        "resamples": n_boot,
    }


def classification_report(p: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    pred = p.argmax(1)
    labels = list(range(len(classes)))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "ece": ece(p, y),
        "nll": nll(p, y),
        "per_class": {
            classes[i]: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(sup[i]),
            }
            for i in labels
        },
        "confusion_matrix": {"labels": classes, "matrix": confusion_matrix(y, pred, labels=labels).tolist()},
        "precision_at_coverage": coverage_curve(p, y),
        "reliability": reliability(p, y),
    }
