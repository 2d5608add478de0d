"""Calibrated probabilities are a proper distribution whose argmax is the predicted label, with a tie only where
the model was indifferent (property test over random logits and calibration maps)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.calibration import FieldScores, log_softmax, top_label

LOGITS = st.integers(2, 8).flatmap(
    lambda k: arrays(np.float64, st.tuples(st.integers(1, 12), st.just(k)), elements=st.floats(-12, 12))
)


@settings(max_examples=200, deadline=None)
@given(LOGITS, st.floats(0.05, 4.0), st.floats(-3.0, 3.0))
def test_the_top_label_map_keeps_the_ranking_and_invents_no_ties(z: np.ndarray, slope: float, bias: float) -> None:
    p = np.exp(log_softmax(z))
    q = top_label(p, slope, bias)
    assert np.allclose(q.sum(1), 1.0) and (q >= 0).all()
    for row_p, row_q in zip(p, q, strict=True):
        order = np.argsort(-row_p, kind="stable")
        gaps_p, gaps_q = -np.diff(row_p[order]), -np.diff(row_q[order])
        assert (gaps_q >= -1e-12).all()  # every label keeps its rank
        if gaps_p[0] > 1e-6:
            assert row_q.argmax() == row_p.argmax()
        # the model preferred one label (by 1% or more): it stays visibly ahead, no 1e-9 coin flip. A preference
        # is a ratio, not a difference: 0.24895 vs 0.24883 (0.05%) is indifference, and a map that brings the top
        # down to near 1/k may leave it ~1e-6 ahead, as it should
        if np.log(row_p[order[0]] / max(row_p[order[1]], 1e-300)) > 1e-2:
            assert gaps_q[0] > 1e-6, (row_p, row_q)


@settings(max_examples=100, deadline=None)
@given(LOGITS, LOGITS, st.floats(0.05, 4.0), st.floats(-3.0, 3.0))
def test_the_ensembles_probabilities_are_a_distribution_whose_argmax_is_the_label(
    a: np.ndarray, b: np.ndarray, slope: float, bias: float
) -> None:
    if a.shape != b.shape:
        b = np.resize(b, a.shape)
    scores = FieldScores(log_softmax(a), log_softmax(b), None, (0.7, 0.4, 0.0), 1.0, [slope, bias])
    before, after = scores.before_top_label(), scores.probs()
    assert np.allclose(after.sum(1), 1.0)
    unique_top = np.sort(before, 1)[:, -1] - np.sort(before, 1)[:, -2] > 1e-9
    assert (after.argmax(1)[unique_top] == before.argmax(1)[unique_top]).all()
