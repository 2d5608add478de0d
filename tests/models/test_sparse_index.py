"""The pruned inverted index: bounded work per query, and the rows that share a rare term are always candidates."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse import random as sparse_random

from models.sparse_index import PrunedIndex, keep_top_per_row


def test_keep_top_per_row_keeps_each_rows_largest_entries_in_column_order() -> None:
    x = csr_matrix(np.array([[0.1, 0.9, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [0.3, 0.2, 0.4, 0.1]]))
    got = keep_top_per_row(x, 2).toarray()
    assert got.tolist() == [[0.0, 0.9, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.4, 0.0]]
    assert keep_top_per_row(x, 2).has_sorted_indices
    rng_x = sparse_random(50, 300, density=0.1, format="csr", random_state=1)
    pruned = keep_top_per_row(rng_x, 7)
    for i in range(50):
        row, kept = rng_x[i].toarray().ravel(), pruned[i].toarray().ravel()
        assert np.count_nonzero(kept) == min(7, np.count_nonzero(row))
        assert set(np.flatnonzero(kept)) <= set(np.flatnonzero(row))
        if np.count_nonzero(kept):
            assert kept[kept > 0].min() >= np.sort(row)[-np.count_nonzero(kept)]


def test_a_row_sharing_a_rare_term_is_found_among_thousands_sharing_a_common_one() -> None:
    n, vocab = 5000, 40
    dense = np.zeros((n, vocab))
    dense[:, 0] = 1.0  # every row has the common term
    dense[4321, 7] = 3.0  # one row has the rare term
    rows = csr_matrix(dense / np.linalg.norm(dense, axis=1, keepdims=True))
    index = PrunedIndex(rows, np.arange(n) + 100, per_term=16)
    query = csr_matrix(np.eye(1, vocab, 7) + 0.1 * np.eye(1, vocab, 0))  # TF-IDF: a common term weighs little
    cands = index.candidates(query, n=5)[0]
    assert 4321 + 100 in cands and len(cands) <= 5
    # the common term's posting list is cut to 16 rows: the work per query does not grow with the rows
    assert index._postings[0].nnz == 16


def test_an_empty_index_and_a_query_without_known_terms_give_no_candidates() -> None:
    rows = csr_matrix(np.eye(3, 5))
    assert [len(c) for c in PrunedIndex(rows[:0], np.zeros(0)).candidates(csr_matrix((2, 5)))] == [0, 0]
    assert [len(c) for c in PrunedIndex(rows, np.arange(3)).candidates(csr_matrix((1, 5)))] == [0]
