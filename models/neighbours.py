"""Neighbour votes: the labels of the most similar past tickets (the adapter's ticket memory) as the third member of
the classification ensemble.

Helpdesks see the same request again and again (re-filed tickets, recurring faults, reworded follow-ups). A
classifier averages over everything it has seen; a near-twin in the history says directly which queue and priority
this kind of ticket got. How far a neighbour's label can be trusted depends on how similar it is, so each field gets
an *agreement map*, P(neighbour's label is the ticket's label | similarity), a logistic curve fitted on validation
tickets against the training rows. Each of the top k neighbours adds its label's log-odds of being right (relative to
a uniform guess, never negative) as evidence; the member's log-probabilities are the softmax of that evidence. With
no similar past ticket the evidence is near zero, the member is near uniform and leaves the decision to the others;
the ensemble weight (models/calibration.py) is learnt on validation, so a history without near-twins gives it little
or no say.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.calibration import fit_platt, log_softmax, platt
from models.ticket_memory import TicketMemory

K = 5  # neighbours that vote; each one's evidence shrinks with its similarity, so a larger k changes little


def agreement(
    hits: Sequence[tuple[np.ndarray, np.ndarray]], row_labels: Sequence[str | None], truth: Sequence[str]
) -> tuple[float, float]:
    """Fit the agreement map (slope, bias on similarity) from each validation ticket's most similar labelled row."""
    sims, ok = [], []
    for (idx, sim), want in zip(hits, truth, strict=True):
        for j, s in zip(idx, sim, strict=True):
            if row_labels[int(j)] is not None:
                sims.append(float(s))
                ok.append(row_labels[int(j)] == want)
                break
    if len(set(ok)) < 2:
        # all right or all wrong: no curve to fit. (0, 0) trusts every neighbour at 0.5 whatever its similarity
        # (a plain k-NN vote); the ensemble weight fitted on the same validation tickets decides what it counts for.
        return 0.0, 0.0
    return fit_platt(np.array(sims), np.array(ok, dtype=float))


def vote_logprobs(
    hits: Sequence[tuple[np.ndarray, np.ndarray]],
    row_labels: Sequence[str | None],
    labels: Sequence[str],
    curve: Sequence[float],
    k: int = K,
) -> np.ndarray:
    """Per ticket, log-probabilities over `labels` from the votes of its top-k labelled neighbours."""
    index = {lab: i for i, lab in enumerate(labels)}
    n_labels = len(labels)
    evidence = np.zeros((len(hits), n_labels))
    for t, (idx, sim) in enumerate(hits):
        used = 0
        for j, s in zip(idx, sim, strict=True):
            lab = row_labels[int(j)]
            if lab not in index or used >= k:
                continue
            used += 1
            c = float(np.clip(platt(np.array([s]), curve[0], curve[1])[0], 1e-4, 1 - 1e-4))
            # log-odds of "this neighbour is right" against a uniform guess among n_labels labels
            evidence[t, index[lab]] += max(0.0, float(np.log(c / (1 - c) * (n_labels - 1))))
    return log_softmax(evidence)


def member(
    memory: TicketMemory | None,
    texts: Sequence[str],
    fields: dict[str, list[str]],
    curves: dict[str, Sequence[float]],
    k: int = K,
) -> dict[str, np.ndarray]:
    """The neighbour-vote log-probabilities per field that has an agreement map (one search for all fields)."""
    want = {f: labs for f, labs in fields.items() if f in curves}
    if memory is None or not want or not texts:
        return {}
    hits = memory.search(texts, k * 2)  # 2k candidates: some rows may lack one field's label
    return {f: vote_logprobs(hits, memory.labels_of(f), labs, curves[f], k) for f, labs in want.items()}
