"""The ticket memory: the training file's tickets (text, labels, the agent's reply), found again by TF-IDF similarity
(word n-grams to find candidates, word + character n-grams to choose among them). Tickets reviewed after training
are added as they are reviewed (`extend`; the worker's workers/memory_sync.py), without refitting anything.

Two uses, both measured on this project's data (MODEL_CARD.md):
- **replies**: the reply an agent wrote to the most similar earlier ticket scores higher against reference replies
  than anything the bundled 135M model drafts (chrF 40.5 vs 28–30), so `reply_mode="retrieve"` suggests that reply
  (in the ticket's language only) and drafts with the LLM only when nothing similar enough exists;
  `reply_mode="generate"` drafts with the LLM and shows it the past reply as an example;
- **neighbour votes** (models/neighbours.py): the labels of the most similar past tickets are a third member of the
  classification ensemble; recurring and re-filed tickets get the label their twin had.

Search cost does not grow with the memory (bench/memory.py): a pruned inverted index (models/sparse_index.py) picks
candidates by their heaviest shared terms, their exact word cosines choose the best `_RERANK`, and character vectors
kept per row (vectorised in bulk by models/fast_tfidf.py; ~4 bytes per n-gram) re-rank those.

Stored in the adapter directory as gzipped JSON lines (no pickle); the vectorisers are refitted at load (a few seconds
for 5,000 tickets), so the file holds only text. It holds the operator's own past tickets and replies: treat an
adapter with a memory as being as sensitive as the ticket history it came from.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import language as lang
from models import prompts
from models.lexical import CHAR, make_vectorizer

FILE = "tickets.jsonl.gz"
LEGACY_FILE = "replies.jsonl.gz"  # adapters saved before labels were kept: rows with a reply only
# Text of the past ticket kept for matching; the first part of a ticket carries most of what identifies it.
_MATCH_CHARS = 2000
# Word-index candidates re-ranked with character n-grams (10 recover what scoring every row with both finds,
# chrF within 0.1 on 675 held-out tickets), and the rows the character vocabulary is fitted on (bounds load time).
_RERANK = 10
_CHAR_FIT_ROWS = 5000


@dataclass(frozen=True)
class Match:
    """The past reply found for one ticket."""

    reply: str
    similarity: float
    source_id: str


class _CharRows:
    """Each memory row's character n-gram TF-IDF vector, compactly: uint16 columns (the vocabulary is capped well
    below 65,536) and float16 weights, ~4 bytes per n-gram (a 550-character ticket has ~1,000)."""

    def __init__(self, x: Any) -> None:
        self.indptr = np.asarray(x.indptr, dtype=np.int64)
        self.cols = np.asarray(x.indices, dtype=np.uint16)
        self.vals = np.asarray(x.data, dtype=np.float16)

    def take(self, rows: Sequence[int] | np.ndarray) -> _CharRows:
        """The given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        pos, lengths = _ranges(self.indptr, rows)
        out = _CharRows.__new__(_CharRows)
        out.indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out.cols, out.vals = self.cols[pos], self.vals[pos]
        return out

    def append(self, other: _CharRows) -> _CharRows:
        out = _CharRows.__new__(_CharRows)
        out.indptr = np.concatenate([self.indptr, other.indptr[1:] + self.indptr[-1]])
        out.cols = np.concatenate([self.cols, other.cols])
        out.vals = np.concatenate([self.vals, other.vals])
        return out

    def dots(self, dense_queries: np.ndarray, q_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """dense_queries[q_rows[i]] . row rows[i], for every i."""
        pos, lengths = _ranges(self.indptr, rows)
        return _gather_dots(dense_queries, q_rows, self.cols[pos], self.vals[pos], lengths)

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.cols.nbytes + self.vals.nbytes)


def _gather_dots(
    dense: np.ndarray, q_rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Per pair i: sum of vals * dense[q_rows[i], cols] over pair i's `lengths[i]` consecutive entries (flat gathers
    and one reduceat: ~3x faster than two-index fancy indexing and bincount, measured)."""
    out = np.zeros(len(lengths))
    if not len(cols):
        return out
    flat = np.repeat(q_rows.astype(np.int64) * dense.shape[1], lengths)
    flat += cols
    prods = np.take(dense.ravel(), flat)
    prods *= vals
    nonempty = lengths > 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
    out[nonempty] = np.add.reduceat(prods, starts)
    return out


def _ranges(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the stored entries of `rows` (concatenated, in order) and each row's entry count."""
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, np.int64), lengths
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets, lengths


@dataclass
class _Query:
    """A batch of texts as the memory compares them: word vectors (sparse) and character vectors (dense rows)."""

    words: Any
    chars: np.ndarray


class TicketMemory:
    """Past ticket rows ({id, text, language, reply?, labels?}), their word and character TF-IDF vectors, and pruned
    indexes over them (models/sparse_index.py): one over every row (neighbour votes), one per language over the rows
    with a reply (reply suggestions)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        from models.fast_tfidf import FastCharVectorizer, FastWordVectorizer

        if not rows:
            raise ValueError("a ticket memory needs at least one ticket")
        texts = [r["text"] for r in rows]
        fitted = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, dtype=np.float32)
        words = fitted.fit_transform(texts)
        # only the hash table is kept: scikit-learn's vocabulary dict of a 50,000-row memory holds ~1.2M strings
        self._vec = FastWordVectorizer(fitted)
        del fitted
        # Character n-grams (the lexical partner's block) re-rank the word index's top candidates; the vocabulary
        # and idf are fitted on at most _CHAR_FIT_ROWS rows (bounds load time), then every row is vectorised in bulk.
        sample = texts if len(texts) <= _CHAR_FIT_ROWS else texts[:: -(-len(texts) // _CHAR_FIT_ROWS)]
        self._char = FastCharVectorizer(make_vectorizer(CHAR, min_df=2 if len(sample) >= 50 else 1).fit(sample))
        self._set_rows(rows, words, _CharRows(self._char.transform(texts)))

    def _set_rows(self, rows: Sequence[dict[str, Any]], words: Any, chars: _CharRows) -> None:
        """The rows, their vectors (one row each), the masks searches filter on and the indexes over them."""
        from models.sparse_index import PrunedIndex

        self.rows, self._matrix, self._chars = list(rows), words.tocsr(), chars
        self._languages = np.array([r.get("language") or "" for r in self.rows])
        self._has_reply = np.array([bool(r.get("reply")) for r in self.rows])
        self._index = PrunedIndex(self._matrix, np.arange(len(self.rows)))
        self._reply_index = {}
        for code in np.unique(self._languages[self._has_reply]):
            ids = np.flatnonzero(self._has_reply & (self._languages == code))
            self._reply_index[str(code)] = PrunedIndex(self._matrix[ids], ids)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def replies(self) -> int:
        """Rows that carry a reply."""
        return int(self._has_reply.sum())

    @property
    def nbytes(self) -> int:
        """Memory held by the vectors (the rows' text and labels not counted)."""
        m = self._matrix
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + self._chars.nbytes)

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        texts: Sequence[str],
        replies: Sequence[str | None],
        labels: Sequence[Mapping[str, str]] | None = None,
    ) -> TicketMemory | None:
        """From training tickets; a row needs text and a reply or a label; None when no row qualifies."""
        rows = _rows(ids, texts, replies, labels)
        return cls(rows) if rows else None

    def extend(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        replies: Sequence[str | None],
        labels: Sequence[Mapping[str, str]] | None = None,
        max_rows: int = 0,
    ) -> int:
        """Add tickets (reviewed after training: corrected labels, sent replies) without refitting the vocabularies;
        a row whose id is already held is replaced and moves to the end (the latest review wins). Beyond `max_rows`
        (0: no bound) the rows at the front go: the training rows first, then the least recently reviewed.
        Returns the rows added or replaced.

        Words and character n-grams the fitted vocabularies lack do not count. Not safe to call while another thread
        searches this memory (the worker calls it between batches).
        """
        from scipy.sparse import vstack

        new = _rows(ids, texts, replies, labels)
        latest = {r["id"]: r for r in new}  # one row per id: the last one given
        if not latest:
            return 0
        keep = [i for i, r in enumerate(self.rows) if r["id"] not in latest]
        added = list(latest.values())
        if max_rows and len(keep) + len(added) > max_rows:
            added = added[-max_rows:]
            keep = keep[len(keep) - (max_rows - len(added)) :] if max_rows > len(added) else []
        added_texts = [r["text"] for r in added]
        words = vstack([self._matrix[keep], self._vec.transform(added_texts).astype(np.float32)]).tocsr()
        chars = self._chars.take(keep).append(_CharRows(self._char.transform(added_texts)))
        self._set_rows([self.rows[i] for i in keep] + added, words, chars)
        return len(added)

    def forget(self, ids: Sequence[str]) -> int:
        """Drop the rows of these ticket ids (an erasure request): they stop voting and are never suggested again.
        The vocabularies stay as fitted (they hold words, not tickets). Returns the rows removed."""
        gone = {str(i) for i in ids}
        keep = [i for i, r in enumerate(self.rows) if r["id"] not in gone]
        removed = len(self.rows) - len(keep)
        if removed:
            self._set_rows([self.rows[i] for i in keep], self._matrix[keep], self._chars.take(keep))
        return removed

    def save(self, d: Path) -> None:
        """Write the rows (gzipped JSON lines, sorted keys: the same memory gives the same bytes)."""
        (d / LEGACY_FILE).unlink(missing_ok=True)
        with gzip.GzipFile(d / FILE, "wb", mtime=0) as f:
            for r in self.rows:
                f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, d: Path) -> TicketMemory | None:
        """The adapter's memory (or the reply-only memory of an older adapter), or None when it has none."""
        for name in (FILE, LEGACY_FILE):
            p = d / name
            if p.exists():
                with gzip.open(p, "rt", encoding="utf-8") as f:
                    return cls([json.loads(line) for line in f if line.strip()])
        return None

    def query(self, texts: Sequence[str]) -> _Query:
        """Vectorise a batch once for several searches (neighbour votes and reply suggestions)."""
        clipped = [t[:_MATCH_CHARS] for t in texts]
        chars = self._char.transform(clipped).astype(np.float32).toarray()
        return _Query(self._vec.transform(clipped).astype(np.float32), chars)

    def _rank(self, q: _Query, candidates: list[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: its candidates' exact word cosines, the top `max(k, _RERANK)` of them re-ranked by the mean of
        the word and character cosines; up to k (row indices, similarities), most similar first."""
        q_rows = np.repeat(np.arange(len(candidates)), [len(c) for c in candidates])
        rows = np.concatenate(candidates) if candidates else np.zeros(0, np.int64)
        word = self._word_dots(q.words, q_rows, rows)
        # the word index's best (stable: equal scores keep the lower row first, as a full sort did)
        picked_q, picked_rows, picked_word = [], [], []
        start = 0
        for i, c in enumerate(candidates):
            w = word[start : start + len(c)]
            start += len(c)
            order = np.lexsort((c, -w))[: max(k, _RERANK)]
            order = order[w[order] > 0]
            picked_q.append(np.full(len(order), i))
            picked_rows.append(c[order])
            picked_word.append(w[order])
        pq = np.concatenate(picked_q) if picked_q else np.zeros(0, np.int64)
        pr = np.concatenate(picked_rows) if picked_rows else np.zeros(0, np.int64)
        score = (np.concatenate(picked_word) + self._chars.dots(q.chars, pq, pr)) / 2 if len(pr) else np.zeros(0)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        start = 0
        for rows_i in picked_rows:
            sc, rw = score[start : start + len(rows_i)], rows_i
            start += len(rows_i)
            order = np.argsort(-sc, kind="stable")[:k]  # ties keep the word index's order
            out.append((rw[order], sc[order]))
        return out

    def _word_dots(self, words: Any, q_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact word cosines of (query, row) pairs: the queries' terms as a small dense block (their union only; the
        vocabulary can hold millions of n-grams), rows' entries gathered from it (terms no query has map to a zero
        column)."""
        union, inverse = np.unique(words.indices, return_inverse=True)
        dense = np.zeros((words.shape[0], len(union) + 1), dtype=np.float32)
        dense[np.repeat(np.arange(words.shape[0]), np.diff(words.indptr)), inverse] = words.data
        m = self._matrix
        pos, lengths = _ranges(m.indptr, rows)
        # vocabulary column -> its place in the union (-1: no query has it), through a vocabulary-sized array kept
        # per thread and reset after use: allocating it per call cost more than the search (millions of bigrams)
        scratch = self._scratch(m.shape[1])
        scratch[union] = np.arange(len(union), dtype=np.int32)
        try:
            at = scratch[m.indices[pos]]
        finally:
            scratch[union] = -1
        return _gather_dots(dense, q_rows, np.where(at >= 0, at, len(union)), m.data[pos], lengths)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the per-thread scratch behind (a thread-local cannot be copied)."""
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def _scratch(self, width: int) -> np.ndarray:
        """This thread's column map (all -1 between uses), grown with the vocabulary."""
        local = self.__dict__.setdefault("_local", threading.local())
        arr = getattr(local, "cols", None)
        if arr is None or len(arr) < width:
            arr = local.cols = np.full(width, -1, dtype=np.int32)
        return arr

    def search(self, texts: Sequence[str] | _Query, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text, up to k (row indices, similarities) over every row, most similar first.

        Similarity is the mean of the word and the character n-gram TF-IDF cosines, computed for the `_RERANK` rows
        with the highest word cosine among the pruned index's candidates.
        """
        q = texts if isinstance(texts, _Query) else self.query(texts)
        if not q.words.shape[0]:
            return []
        return self._rank(q, self._index.candidates(q.words), k)

    def nearest(
        self, texts: Sequence[str] | _Query, languages: Sequence[str | None], *, min_similarity: float
    ) -> list[Match | None]:
        """Per ticket, the reply of the most similar past ticket written in the ticket's language, if similar enough.

        A ticket whose language is unknown only matches replies whose language is unknown too: a reply in the wrong
        language is worse than a drafted one.
        """
        q = texts if isinstance(texts, _Query) else self.query(texts)
        candidates = [np.zeros(0, np.int64)] * len(languages)
        for code in set(languages):
            index = self._reply_index.get(code or "")
            which = [i for i, c in enumerate(languages) if c == code]
            if index is None or not which:
                continue
            for i, cand in zip(which, index.candidates(q.words[which]), strict=True):
                candidates[i] = cand
        out: list[Match | None] = []
        for idx, sim in self._rank(q, candidates, 1):
            if len(idx) and sim[0] >= min_similarity:
                row = self.rows[int(idx[0])]
                out.append(Match(row["reply"], float(sim[0]), row["id"]))
            else:
                out.append(None)
        return out

    def labels_of(self, field: str) -> list[str | None]:
        """Each row's label for `field` (None where the row has none, e.g. a reply-only memory)."""
        return [(r.get("labels") or {}).get(field) for r in self.rows]


def _rows(
    ids: Sequence[str],
    texts: Sequence[str],
    replies: Sequence[str | None],
    labels: Sequence[Mapping[str, str]] | None,
) -> list[dict[str, Any]]:
    """Memory rows: text cut to what matching reads, the sanitised reply with its language, the non-empty labels."""
    rows = []
    for n, (i, text, reply) in enumerate(zip(ids, texts, replies, strict=True)):
        clean = prompts.sanitize(reply or "")
        labs = {k: v for k, v in (labels[n] if labels is not None else {}).items() if v}
        if not text.strip() or not (clean or labs):
            continue
        row: dict[str, Any] = {"id": str(i), "text": text[:_MATCH_CHARS]}
        if clean:
            row.update(reply=clean, language=lang.detect(clean) or "")
        if labs:
            row["labels"] = labs
        rows.append(row)
    return rows
