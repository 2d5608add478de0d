"""Reply metrics: chrF (character n-gram F-score, n = 1..6, beta = 2, as in sacreBLEU's default), language match
and the longest run of words copied from the ticket."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def _ngrams(s: str, n: int) -> Counter[str]:
    s = " ".join(s.split())
    s = s.replace(" ", "")  # sacreBLEU's chrF ignores whitespace by default
    return Counter(s[i : i + n] for i in range(len(s) - n + 1))


def chrf(hyp: str, ref: str, order: int = 6, beta: float = 2.0) -> float:
    precs, recs = [], []
    for n in range(1, order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        if not h or not r:
            continue
        overlap = sum((h & r).values())
        precs.append(overlap / sum(h.values()))
        recs.append(overlap / sum(r.values()))
    if not precs:
        return 0.0
    pm, rm = sum(precs) / len(precs), sum(recs) / len(recs)
    if pm + rm == 0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * pm * rm / (b2 * pm + rm)


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
    return sum(chrf(h, r) for h, r in zip(hyps, refs, strict=True)) / max(1, len(hyps))


def longest_copied_run(reply: str, ticket: str) -> int:
    """Longest run of consecutive words of the reply that also occurs verbatim in the ticket."""
    a, b = reply.lower().split(), ticket.lower().split()
    if not a or not b:
        return 0
    best = 0
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        ai = a[i - 1]
        for j in range(1, len(b) + 1):
            if ai == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best
