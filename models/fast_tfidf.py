"""TF-IDF in bulk: the same vectors as a fitted scikit-learn `TfidfVectorizer` (character `char_wb` n-grams, or word
1-2-grams with the default token pattern), computed with array operations instead of scikit-learn's per-n-gram
Python loop.

scikit-learn builds every n-gram of every ticket as a Python string and looks it up in a dict (a 550-character
ticket has ~1,800 character n-grams), which measured 0.9-1.7 ms per ticket for the character block here: more than
the rest of a ticket-memory search. These classes hash all n-grams of a batch at once (64-bit polynomial hashes over
code points), look them up in an open-addressing table built from the fitted vocabulary, and apply the vectoriser's
own sublinear tf, idf and L2 norm, so `transform` returns the fitted vectoriser's matrix (tests compare them; a
64-bit hash collision between two vocabulary entries is refused at build time).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_P = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime as the polynomial base: odd, so every code point matters
_EMPTY = np.uint64(0)  # table slot marker; a real hash is never 0 (hashes are forced odd)


def _finish(h: np.ndarray) -> np.ndarray:
    """Mix the polynomial hash (its low bits are weak) and force it odd, so 0 can mark an empty table slot."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(29))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(32))
    return h | np.uint64(1)


def _window_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every length-n window of `codes` (uint64 code points)."""
    m = len(codes) - n + 1
    h = np.zeros(max(m, 0), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + codes[j : j + m] + np.uint64(1)
    return _finish(h)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _string_keys(strings: Sequence[str]) -> np.ndarray:
    """`_finish(poly(s))` of each string, poly(s) = sum over code points (c + 1) * P**(len - 1 - j)."""
    keys = np.empty(len(strings), dtype=np.uint64)
    by_len: dict[int, list[int]] = {}
    for i, g in enumerate(strings):
        by_len.setdefault(len(g), []).append(i)
    for n, members in by_len.items():
        block = np.stack([_codes(strings[i]) for i in members]) if n else np.zeros((len(members), 0), np.uint64)
        h = np.zeros(len(members), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                h = h * _P + block[:, j] + np.uint64(1)
        keys[members] = _finish(h)
    return keys


class _Fast:
    """The shared part: the vocabulary as an open-addressing hash table, and tf-idf weighting of found columns."""

    def __init__(self, fitted: Any) -> None:
        if fitted.norm != "l2" or not fitted.use_idf or fitted.binary:
            raise ValueError("only l2-normalised idf-weighted (non-binary) vectorisers are supported")
        if fitted.strip_accents is not None or fitted.preprocessor is not None or fitted.tokenizer is not None:
            raise ValueError("accent stripping and custom preprocessors / tokenizers are not supported")
        self.lowercase = bool(fitted.lowercase)
        self.sublinear = bool(fitted.sublinear_tf)
        self.idf = np.asarray(fitted.idf_, dtype=np.float64)
        self.width = len(self.idf)
        # a vectoriser rebuilt from a saved vocabulary (models/lexical.py load) has it only as the parameter
        vocabulary = getattr(fitted, "vocabulary_", None) or fitted.vocabulary
        grams = list(vocabulary)
        cols = np.fromiter((vocabulary[g] for g in grams), dtype=np.int64, count=len(grams))
        keys = _string_keys(grams)
        if len(np.unique(keys)) != len(keys):
            raise ValueError("64-bit hash collision in the vocabulary; refit or use scikit-learn's transform")
        # open addressing, load factor <= 0.5: a miss ends at the first empty slot within a few probes
        self._bits = max(4, int(np.ceil(np.log2(max(1, len(keys)) * 2))))
        size = 1 << self._bits
        self._keys = np.zeros(size, dtype=np.uint64)
        self._cols = np.full(size, -1, dtype=np.int64)
        slot = self._slot(keys)
        pending = np.arange(len(keys))
        while len(pending):
            s = slot[pending]
            free = self._keys[s] == _EMPTY
            # several pending keys may target one free slot: the first of each claims it, the rest probe on
            _, first = np.unique(s[free], return_index=True)
            claim = pending[free][first]
            self._keys[slot[claim]] = keys[claim]
            self._cols[slot[claim]] = cols[claim]
            pending = np.setdiff1d(pending, claim, assume_unique=True)
            slot[pending] = (slot[pending] + 1) & (size - 1)

    def _slot(self, h: np.ndarray) -> np.ndarray:
        return (h >> np.uint64(64 - self._bits)).astype(np.int64)

    def _lookup(self, h: np.ndarray) -> np.ndarray:
        """Column of each hash in the vocabulary, -1 for n-grams the vectoriser does not know."""
        out = np.full(len(h), -1, dtype=np.int64)
        slot = self._slot(h)
        todo = np.arange(len(h))
        mask = (1 << self._bits) - 1
        while len(todo):
            s = slot[todo]
            k = self._keys[s]
            hit = k == h[todo]
            out[todo[hit]] = self._cols[s[hit]]
            todo = todo[~hit & (k != _EMPTY)]
            slot[todo] = (slot[todo] + 1) & mask
        return out

    def ngram_columns(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(document index, vocabulary column) of every known n-gram occurrence in `texts`."""
        raise NotImplementedError

    def transform(self, texts: Sequence[str]) -> Any:
        """The fitted vectoriser's TF-IDF matrix of `texts` (CSR, float64, rows L2-normalised)."""
        from scipy.sparse import csc_matrix

        docs, cols = self.ngram_columns(texts)
        # via CSC: two linear counting sorts leave each row's columns in order, so summing the repeated n-grams needs
        # no comparison sort (2x faster than building CSR directly, measured)
        x = csc_matrix((np.ones(len(cols)), (docs, cols)), shape=(len(texts), self.width)).tocsr()
        x.sum_duplicates()
        if self.sublinear:
            x.data = 1.0 + np.log(x.data)
        x.data *= self.idf[x.indices]
        lengths = np.diff(x.indptr)
        rows = np.repeat(np.arange(len(texts)), lengths)
        norm = np.sqrt(np.bincount(rows, weights=x.data**2, minlength=len(texts)))
        x.data /= np.where(norm > 0, norm, 1.0)[rows]
        return x


class FastCharVectorizer(_Fast):
    """`transform` of a fitted char_wb TfidfVectorizer, vectorised."""

    def __init__(self, fitted: Any) -> None:
        if fitted.analyzer != "char_wb":
            raise ValueError(f"only char_wb vectorisers are supported, not {fitted.analyzer!r}")
        super().__init__(fitted)
        self.lo, self.hi = fitted.ngram_range

    def ngram_columns(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(document index, vocabulary column) of every known n-gram occurrence in `texts`."""
        pieces: list[str] = []
        word_lens: list[int] = []
        doc_words: list[int] = []
        for t in texts:
            words = (t.lower() if self.lowercase else t).split()
            doc_words.append(len(words))
            for w in words:
                pieces.append(" " + w + " ")
                word_lens.append(len(w) + 2)
        if not pieces:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        codes = _codes("".join(pieces))
        lens = np.array(word_lens, dtype=np.int64)
        word_of = np.repeat(np.arange(len(lens)), lens)
        doc_of_word = np.repeat(np.arange(len(texts)), doc_words)
        docs, cols = [], []
        for n in range(self.lo, self.hi + 1):
            m = len(codes) - n + 1
            if m <= 0:
                break
            # windows inside one padded word only; a word shorter than n yields none (char_wb emits the whole padded
            # word once for the first n that reaches its length, which the window of exactly that length is)
            inside = np.flatnonzero(word_of[:m] == word_of[n - 1 :])
            if not len(inside):
                continue
            col = self._lookup(_window_hashes(codes, n)[inside])
            known = col >= 0
            cols.append(col[known])
            docs.append(doc_of_word[word_of[inside[known]]])
        if not cols:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(docs), np.concatenate(cols)


class FastWordVectorizer(_Fast):
    """`transform` of a fitted word TfidfVectorizer with n-grams up to 2 and a regex token pattern, vectorised."""

    def __init__(self, fitted: Any) -> None:
        if fitted.analyzer != "word" or fitted.stop_words is not None or fitted.ngram_range[1] > 2:
            raise ValueError("only word vectorisers without stop words and with n-grams up to 2 are supported")
        super().__init__(fitted)
        self.lo, self.hi = fitted.ngram_range
        self.pattern = re.compile(fitted.token_pattern)
        if self.pattern.groups > 1:
            raise ValueError("a token pattern with more than one group is not supported")

    def ngram_columns(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(document index, vocabulary column) of every known unigram / bigram occurrence in `texts`."""
        tokens: list[str] = []
        per_doc: list[int] = []
        for t in texts:
            found = self.pattern.findall(t.lower() if self.lowercase else t)
            tokens += found
            per_doc.append(len(found))
        if not tokens:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lens = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        codes = _codes("".join(tokens))
        # poly(token) = sum (c + 1) * P**(distance from the token's end), by segment sums (uint64 wraps mod 2**64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        ends = starts + lens
        from_end = np.repeat(ends, lens) - np.arange(len(codes)) - 1
        powers = _powers(int(lens.max()) + 2)
        with np.errstate(over="ignore"):
            poly = np.add.reduceat((codes + np.uint64(1)) * powers[from_end], starts)
        doc_of = np.repeat(np.arange(len(texts)), per_doc)
        docs, cols = [], []
        if self.lo <= 1:
            col = self._lookup(_finish(poly))
            docs.append(doc_of[col >= 0])
            cols.append(col[col >= 0])
        if self.hi >= 2 and len(tokens) > 1:
            same_doc = doc_of[:-1] == doc_of[1:]
            with np.errstate(over="ignore"):
                # poly(a + " " + b) = poly(a) * P**(len(b) + 1) + (32 + 1) * P**len(b) + poly(b)
                bigram = poly[:-1] * powers[lens[1:] + 1] + np.uint64(33) * powers[lens[1:]] + poly[1:]
            col = self._lookup(_finish(bigram))
            ok = same_doc & (col >= 0)
            docs.append(doc_of[:-1][ok])
            cols.append(col[ok])
        return np.concatenate(docs), np.concatenate(cols)


def _powers(n: int) -> np.ndarray:
    """P**0 .. P**(n-1) mod 2**64."""
    out = np.full(n, _P, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.multiply.accumulate(out, dtype=np.uint64)


def fast_vectorizer(fitted: Any) -> Any:
    """The fast equivalent of a fitted TfidfVectorizer, or the vectoriser itself when its settings are unsupported."""
    try:
        return FastCharVectorizer(fitted) if fitted.analyzer == "char_wb" else FastWordVectorizer(fitted)
    except ValueError:
        return fitted
