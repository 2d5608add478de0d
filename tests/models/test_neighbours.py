"""Neighbour votes: the agreement map, the vote, its place in the ensemble, and the shipped adapter's use of it."""

from __future__ import annotations

import copy

import numpy as np

from models import neighbours
from models.calibration import fit_mixture_f1, log_softmax, macro_f1, mix, platt
from models.ticket_memory import TicketMemory

LABELS = ["billing", "network", "printing"]


def _hits(rows: list[list[tuple[int, float]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array([j for j, _ in r], dtype=int), np.array([s for _, s in r])) for r in rows]


def test_the_agreement_map_trusts_close_neighbours_and_not_distant_ones() -> None:
    rng = np.random.default_rng(0)
    row_labels = [LABELS[i % 3] for i in range(300)]
    hits, truth = [], []
    for t in range(300):
        close = t % 2 == 0
        truth.append(row_labels[t] if close else LABELS[int(rng.integers(3))])  # twins agree; strangers by chance
        hits.append([(t, 0.8 if close else 0.2)])
    slope, bias = neighbours.agreement(_hits(hits), row_labels, truth)
    assert slope > 0
    c_far, c_close = platt(np.array([0.2, 0.8]), slope, bias)
    assert c_close > 0.95 and 0.2 < c_far < 0.5


def test_no_curve_when_every_neighbour_is_right_or_every_one_is_wrong() -> None:
    hits = _hits([[(0, 0.9)], [(1, 0.1)]])
    assert neighbours.agreement(hits, ["billing", "network"], ["billing", "network"]) == (0.0, 0.0)


def test_a_close_twin_decides_distant_neighbours_barely_count_and_rows_without_the_label_are_skipped() -> None:
    curve = (12.0, -5.0)  # ~0.5 agreement at similarity 0.42, ~0.98 at 0.75
    row_labels = [None, "network", "billing", "billing"]
    lp = neighbours.vote_logprobs(
        _hits([[(0, 0.99), (1, 0.75), (2, 0.2), (3, 0.2)], [(2, 0.1), (3, 0.1)], []]), row_labels, LABELS, curve
    )
    assert np.allclose(np.exp(lp).sum(1), 1)
    assert LABELS[int(lp[0].argmax())] == "network"  # row 0 is closer but has no label for this field
    assert np.exp(lp[0]).max() > 0.9
    assert np.allclose(np.exp(lp[1]), 1 / 3, atol=0.01)  # strangers: (almost) no evidence
    assert np.allclose(np.exp(lp[2]), 1 / 3)  # nothing found: uniform, leaves the decision to the others


def test_votes_only_from_the_top_k_labelled_neighbours() -> None:
    curve = (12.0, -5.0)
    hits = _hits([[(0, 0.8), (1, 0.8), (2, 0.8)]])
    row_labels = ["billing", "network", "network"]
    assert LABELS[int(neighbours.vote_logprobs(hits, row_labels, LABELS, curve, k=1)[0].argmax())] == "billing"
    assert LABELS[int(neighbours.vote_logprobs(hits, row_labels, LABELS, curve, k=3)[0].argmax())] == "network"


def test_the_ensemble_gives_votes_weight_only_where_they_help() -> None:
    """Validation tickets of which half have a near-twin in the history: the votes earn weight and lift macro-F1;
    with votes carrying no information (no twins) the chosen mixture is no worse than without them."""
    rng = np.random.default_rng(1)
    n, k = 900, 3
    y = rng.integers(0, k, n)
    # a classifier right ~60% of the time, unsure everywhere
    clf = rng.normal(0, 1, (n, k))
    clf[np.arange(n), y] += 0.9
    clf_lp = log_softmax(clf)
    twin = rng.random(n) < 0.5
    votes = np.zeros((n, k))
    votes[twin, y[twin]] = 3.0
    votes_lp = log_softmax(votes)
    noise_lp = log_softmax(rng.normal(0, 0.05, (n, k)))
    w = fit_mixture_f1([clf_lp, votes_lp], y)
    assert w[1] > 0
    f1_clf = macro_f1(clf_lp.argmax(1), y, k)
    assert macro_f1(mix([clf_lp, votes_lp], w).argmax(1), y, k) > f1_clf + 0.1
    w_noise = fit_mixture_f1([clf_lp, noise_lp], y)
    assert macro_f1(mix([clf_lp, noise_lp], w_noise).argmax(1), y, k) >= f1_clf - 0.005


def test_member_searches_the_memory_once_for_all_fields_with_a_curve() -> None:
    texts = [
        "Subject: VPN drops\n\nThe VPN tunnel drops every ten minutes since the client update.",
        "Subject: Invoice charged twice\n\nOur March invoice charged the licence twice, please refund.",
        "Subject: Printer jammed\n\nThe printer on floor 3 is jammed again and prints blank pages.",
    ]
    labels = [{"queue": "network", "priority": "P2"}, {"queue": "billing"}, {"queue": "printing", "priority": "P4"}]
    memory = TicketMemory.build(["a", "b", "c"], texts, [None] * 3, labels)
    fields = {"queue": LABELS, "priority": ["P2", "P3", "P4"]}
    out = neighbours.member(
        memory, ["Subject: VPN drops again\n\nThe VPN tunnel drops every ten minutes."], fields, {"queue": (12.0, -5.0)}
    )
    assert list(out) == ["queue"]  # priority has no agreement map: no votes for it
    assert LABELS[int(out["queue"][0].argmax())] == "network"
    assert neighbours.member(None, ["x"], fields, {"queue": (1.0, 0.0)}) == {}


# ---------------------------------------------------------------- the shipped adapter (real model)
def test_the_shipped_adapter_votes_and_a_refiled_ticket_gets_its_twins_labels(triager) -> None:  # type: ignore[no-untyped-def]
    cal = triager.meta["calibration"]
    assert all(cal[f]["neighbours"]["k"] == neighbours.K for f in triager.fields)
    row = next(r for r in triager.memory.rows if len(r.get("labels", {})) == 2 and len(r["text"]) > 300)
    # the same ticket filed again with its first sentence reworded
    refiled = "Hello, following up on this. " + row["text"]
    comps = triager.classify_components([refiled])
    for f, labels in triager.fields.items():
        sc = comps[f]
        assert sc.neighbours is not None
        assert labels[int(sc.neighbours[0].argmax())] == row["labels"][f]
        assert labels[int(sc.probs()[0].argmax())] == row["labels"][f]


def test_a_reviewed_ticket_remembered_by_the_shipped_adapter_votes_and_is_suggested_at_once(triager) -> None:  # type: ignore[no-untyped-def]
    from models.inference import TicketInput

    saved = triager.memory
    triager.memory = copy.deepcopy(saved)  # the session's triager is shared: learn into a copy
    try:
        ticket = TicketInput(
            id="jira:SUP-77",
            subject="Espresso machine in the canteen leaks",
            body="The espresso machine on the second floor canteen leaks water onto the floor every morning. "
            "Facilities, please send someone before somebody slips.",
        )
        again = TicketInput(id="jira:SUP-78", subject="Espresso machine leaking again", body=ticket.body)
        before = triager.classify_components([triager.prepare(again)[0]])
        # the labels a reviewer set: for each field, the one the model found least likely for this ticket
        chosen = {f: labels[int(before[f].probs()[0].argmin())] for f, labels in triager.fields.items()}
        reply = "Thank you, facilities will repair the espresso machine today; please avoid the wet floor."
        assert triager.remember([ticket], [{**chosen, "unknown_field": "x"}], [reply]) == 1
        after = triager.classify_components([triager.prepare(again)[0]])
        for f, labels in triager.fields.items():
            j = labels.index(chosen[f])
            assert after[f].neighbours is not None and int(after[f].neighbours[0].argmax()) == j
            assert after[f].probs()[0, j] > before[f].probs()[0, j]
        pred = triager.predict([again])[0]
        assert pred.reply == reply and pred.reply_source == "history:jira:SUP-77"
    finally:
        triager.memory = saved


def test_evaluate_replays_reviews_batch_by_batch_without_touching_the_adapters_memory(triager) -> None:  # type: ignore[no-untyped-def]
    from models.data import Ticket
    from models.evaluate import reviewed_votes

    body = "The espresso machine in the second floor canteen leaks water onto the floor every morning."
    first = Ticket("t1", "Espresso machine leaks", body)
    refiled = Ticket("t2", "Espresso machine leaking again", body)
    texts = [triager.prepare(t)[0] for t in (first, refiled)]  # type: ignore[arg-type]
    comps = triager.classify_components(texts)
    first.labels = {f: labels[int(comps[f].probs()[0].argmin())] for f, labels in triager.fields.items()}
    rows = len(triager.memory)
    apart = reviewed_votes(triager, [first, refiled], texts, 1)  # the first is reviewed before the second arrives
    together = reviewed_votes(triager, [first, refiled], texts, 2)  # both arrive before either is reviewed
    unreviewed = reviewed_votes(triager, [refiled], texts[1:], 1)  # the second with no review before it
    for f, labels in triager.fields.items():
        j = labels.index(first.labels[f])
        assert int(apart[f][1].argmax()) == j and apart[f][1][j] > together[f][1][j]
        # together, the second ticket's votes are the adapter's memory alone (with no similar ticket there they are
        # uniform, so an argmax would tie: compare the votes themselves)
        assert np.allclose(together[f][1], unreviewed[f][0])
        assert np.allclose(apart[f][0], together[f][0])  # the first ticket's own votes never see its review
    assert len(triager.memory) == rows
