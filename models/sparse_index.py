"""Top-k search over L2-normalised sparse rows (TF-IDF) at a cost that does not grow with the number of rows.

A plain sparse product of a batch of queries with every stored row is near dense: each ticket shares a few common
words with almost every other, so the product touches every row (46,000 of 50,000 per query, measured) and its cost
grows linearly with the memory. An impact-ordered ("pruned") inverted index bounds it, as search engines do: each
term keeps only the `per_term` rows where it weighs most, and each query only its `query_terms` heaviest terms, so a
query touches at most `query_terms * per_term` postings whatever the number of rows. The partial scores choose
candidates; the caller scores candidates exactly. A row that shares a rare term with the query is always a candidate
(a rare term's posting list is short enough to be kept whole); what pruning drops are rows that share only common
words, which are not near neighbours (bench/memory.py measures the recall of the exact top-k).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PER_TERM = 256
QUERY_TERMS = 128
CANDIDATES = 40
# Postings a query may read: its terms are taken heaviest first until their (pruned) posting lists reach this many
# entries, so a query of common words stops early while one of rare words (short lists) keeps all of them.
POSTINGS_BUDGET = 8000


def keep_top_per_row(x: Any, k: int) -> Any:
    """A copy of CSR matrix `x` keeping the k largest entries of each row (all of a row with <= k entries)."""
    from scipy.sparse import csr_matrix

    x = csr_matrix(x)
    lengths = np.diff(x.indptr)
    if not x.nnz or lengths.max() <= k:
        return x.copy()
    rows = np.repeat(np.arange(x.shape[0]), lengths)
    order = np.lexsort((-x.data, rows))  # by row, largest first
    rank = np.arange(x.nnz) - np.repeat(x.indptr[:-1], lengths)
    keep = np.sort(order[rank < k])  # rank is that of position i in `order`
    return csr_matrix(
        (x.data[keep], x.indices[keep], np.concatenate([[0], np.cumsum(np.minimum(lengths, k))])), shape=x.shape
    )


class PrunedIndex:
    """Impact-ordered inverted index over the rows of a sparse matrix; ids map its rows to the caller's row numbers."""

    def __init__(self, matrix: Any, ids: np.ndarray, per_term: int = PER_TERM) -> None:
        from scipy.sparse import csr_matrix

        self.ids = np.asarray(ids, dtype=np.int64)
        # term -> its `per_term` heaviest rows: a row of the transposed matrix is a term's posting list
        self._postings = keep_top_per_row(csr_matrix(matrix, dtype=np.float32).T.tocsr(), per_term)

    def __len__(self) -> int:
        return len(self.ids)

    def candidates(
        self,
        queries: Any,
        n: int = CANDIDATES,
        query_terms: int = QUERY_TERMS,
        budget: int = POSTINGS_BUDGET,
    ) -> list[np.ndarray]:
        """Per query row, up to n caller row numbers with the highest partial scores (none for a query sharing no
        kept term with any row)."""
        if not len(self.ids):
            return [np.zeros(0, np.int64) for _ in range(queries.shape[0])]
        pruned = self._within_budget(keep_top_per_row(queries, query_terms), budget)
        partial = (pruned.astype(np.float32) @ self._postings).tocsr()
        out = []
        for i in range(partial.shape[0]):
            lo, hi = partial.indptr[i], partial.indptr[i + 1]
            cols, vals = partial.indices[lo:hi], partial.data[lo:hi]
            if len(cols) > n:
                top = np.argpartition(-vals, n - 1)[:n]
                cols = cols[top]
            out.append(self.ids[cols])
        return out

    def _within_budget(self, q: Any, budget: int) -> Any:
        """Each query row's terms, heaviest first, while the postings they read stay within `budget` (the heaviest
        term always stays)."""
        from scipy.sparse import csr_matrix

        if not q.nnz:
            return q
        lengths = np.diff(q.indptr)
        rows = np.repeat(np.arange(q.shape[0]), lengths)
        order = np.lexsort((-q.data, rows))  # by row, heaviest first
        width = np.diff(self._postings.indptr)
        cost = width[np.minimum(q.indices[order], len(width) - 1)]
        cost[q.indices[order] >= len(width)] = 0
        total = np.cumsum(cost)
        starts = q.indptr[:-1]
        before_row = np.repeat(np.where(starts > 0, total[np.maximum(starts - 1, 0)], 0), lengths)
        spent = total - before_row  # postings read up to and including this term, within its row
        rank = np.arange(q.nnz) - np.repeat(q.indptr[:-1], lengths)
        keep = np.sort(order[(spent <= budget) | (rank == 0)])
        kept_rows = rows[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(kept_rows, minlength=q.shape[0]))])
        return csr_matrix((q.data[keep], q.indices[keep], indptr), shape=q.shape)


def pairwise_dots(a: Any, a_rows: np.ndarray, b: Any, b_rows: np.ndarray) -> np.ndarray:
    """a[a_rows[i]] . b[b_rows[i]] for every i (two CSR matrices of the same width)."""
    if not len(a_rows):
        return np.zeros(0)
    return np.asarray(a[a_rows].multiply(b[b_rows]).sum(1)).ravel()
