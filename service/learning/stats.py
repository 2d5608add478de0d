"""The small tests the registry's automatic decisions rest on (pure Python: the API process may use them)."""

from __future__ import annotations

import math


def field_confidence(confidence: float, fields: int) -> float:
    """The per-field confidence that keeps the chance of a lucky decision over all fields at 1 - confidence
    (Bonferroni): testing two fields must not double it."""
    return 1 - (1 - confidence) / max(1, fields)


def binomial_upper_tail(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))))


def paired_better(wins: int, losses: int) -> float:
    """One-sided exact McNemar test on paired verdicts: the p-value that the first system is not better, from the
    tickets only it got right (`wins`) and only the other got right (`losses`)."""
    return binomial_upper_tail(wins, wins + losses) if wins + losses else 1.0


def proportion_below(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided two-proportion z-test (pooled): the p-value that x1/n1 is not below x2/n2."""
    if not n1 or not n2:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if x1 / n1 >= x2 / n2 else 0.0
    z = (x1 / n1 - x2 / n2) / se
    return 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z)
