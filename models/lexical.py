"""The lexical model: TF-IDF + logistic regression, one regression per label field; saved as JSON +
safetensors (no pickle).

Two configurations share this code. The evaluation *baseline* is the plain one (word 1-2-grams, C chosen on
validation). The LLM's ensemble *partner* adds character n-grams (robust to inflection, compounds, typos and
scripts without spaces) and, per field, chooses C and whether to weight classes by inverse frequency by
validation macro-F1 (balanced weights lift recall on rare queues, which macro-F1 counts as much as common ones).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# One feature block = one TfidfVectorizer; blocks are L2-normalised each and stacked side by side.
WORD: dict[str, Any] = {"analyzer": "word", "ngram_range": (1, 2), "max_features": 40000}
CHAR: dict[str, Any] = {"analyzer": "char_wb", "ngram_range": (2, 5), "max_features": 50000}
SELECT_ROWS = 5000  # the C / class-weight search runs on at most this many training rows
_COMMON: dict[str, Any] = {"sublinear_tf": True, "min_df": 2, "lowercase": True, "strip_accents": None}


def make_vectorizer(block: Mapping[str, Any], **overrides: Any) -> Any:
    """A TfidfVectorizer for one feature block (WORD or CHAR), with any setting overridden."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(**{**_COMMON, **block, **overrides})


class LexicalModel:
    """Shared TF-IDF feature blocks, one multinomial logistic regression per label field."""

    def __init__(
        self,
        vectorizers: list[Any],
        coefs: dict[str, np.ndarray],
        intercepts: dict[str, np.ndarray],
        classes: dict[str, list[str]],
    ) -> None:
        self.vectorizers = vectorizers
        self.coefs = coefs
        self.intercepts = intercepts
        self.classes = classes
        # per field: the C and class weighting it was fitted with (chosen on validation by fit_tuned)
        self.settings: dict[str, dict[str, Any]] = {}
        self._fast: list[Any] | None = None

    @property
    def C(self) -> dict[str, float] | None:
        """Per-field regularisation strength, or None when unknown (an adapter saved before it was recorded)."""
        return {f: float(s["C"]) for f, s in self.settings.items()} or None

    @property
    def kind(self) -> str:
        return " + ".join(f"{v.analyzer} {v.ngram_range[0]}-{v.ngram_range[1]}-gram" for v in self.vectorizers)

    def features(self, texts: Sequence[str]) -> Any:
        """The stacked feature blocks of `texts` (models/fast_tfidf.py computes scikit-learn's exact vectors, 2-6x
        faster; built on first use)."""
        from scipy.sparse import hstack

        from models.fast_tfidf import fast_vectorizer

        if self._fast is None:
            self._fast = [fast_vectorizer(v) for v in self.vectorizers]
        return hstack([v.transform(texts) for v in self._fast]).tocsr()

    @staticmethod
    def _vectorise(texts: Sequence[str], char: bool) -> tuple[list[Any], Any]:
        from scipy.sparse import hstack

        vecs = [make_vectorizer(WORD)] + ([make_vectorizer(CHAR)] if char else [])
        return vecs, hstack([v.fit_transform(texts) for v in vecs]).tocsr()

    @staticmethod
    def _fit_field(X: Any, ys: Sequence[str | None], C: float, class_weight: str | None) -> tuple[Any, ...]:
        from sklearn.linear_model import LogisticRegression

        idx = [i for i, y in enumerate(ys) if y]
        clf = LogisticRegression(C=C, max_iter=2000, class_weight=class_weight)
        clf.fit(X[idx], [ys[i] for i in idx])
        cl = [str(c) for c in clf.classes_]
        W, b = clf.coef_, clf.intercept_
        if len(cl) == 2:  # binary: sklearn keeps one row; expand to a softmax over two
            W = np.vstack([-W[0] / 2, W[0] / 2])
            b = np.array([-b[0] / 2, b[0] / 2])
        return W.astype(np.float32), b.astype(np.float32), cl

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Mapping[str, Sequence[str | None]],
        C: float = 10.0,
        class_weight: str | None = None,
        char: bool = False,
    ) -> LexicalModel:
        vecs, X = cls._vectorise(texts, char)
        m = cls(vecs, {}, {}, {})
        for f, ys in labels.items():
            m.coefs[f], m.intercepts[f], m.classes[f] = cls._fit_field(X, ys, C, class_weight)
            m.settings[f] = {"C": C, "class_weight": class_weight}
        return m

    @classmethod
    def fit_tuned(
        cls,
        texts: Sequence[str],
        labels: Mapping[str, Sequence[str | None]],
        val_texts: Sequence[str],
        val_labels: Mapping[str, Sequence[str | None]],
        Cs: Sequence[float] = (3.0, 10.0, 30.0),
        class_weights: Sequence[str | None] = (None,),
        char: bool = False,
        select_rows: int = SELECT_ROWS,
        fixed: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> LexicalModel:
        """Per field, the (C, class weighting) with the best validation macro-F1; C=10, unweighted, without
        validation data. Beyond `select_rows` training rows the search runs on a random subset of that size and
        only the winner is fitted on all rows, so a large history costs one full fit per field, not six. A field in
        `fixed` ({"C", "class_weight"}, an earlier partner's `settings`) is fitted once with those, no search."""
        from sklearn.metrics import f1_score

        if not val_texts:
            return cls.fit(texts, labels, C=10.0, char=char)
        vecs, X = cls._vectorise(texts, char)
        m = cls(vecs, {}, {}, {})
        Xv = m.features(val_texts)
        rows = np.arange(len(texts))
        if len(texts) > select_rows:
            rows = np.sort(np.random.default_rng(0).choice(len(texts), select_rows, replace=False))
        for f, ys in labels.items():
            if fixed and f in fixed:
                C, cw = float(fixed[f]["C"]), fixed[f].get("class_weight")
                m.coefs[f], m.intercepts[f], m.classes[f] = cls._fit_field(X, ys, C, cw)
                m.settings[f] = {"C": C, "class_weight": cw}
                continue
            keep = [i for i, y in enumerate(val_labels[f]) if y]
            truth = [val_labels[f][i] for i in keep]
            sub = [ys[int(i)] for i in rows]
            best: tuple[float, Any] = (-1.0, None)
            for cw in class_weights:
                for C in Cs:
                    W, b, cl = cls._fit_field(X[rows], sub, C, cw)
                    pred = [cl[j] for j in np.asarray(Xv[keep] @ W.T + b).argmax(1)] if keep else []
                    score = float(f1_score(truth, pred, average="macro", zero_division=0)) if keep else 0.0
                    if score > best[0]:
                        best = (score, (W, b, cl, {"C": C, "class_weight": cw}))
            W, b, cl, chosen = best[1]
            if len(rows) < len(texts):
                W, b, cl = cls._fit_field(X, ys, chosen["C"], chosen["class_weight"])
            m.coefs[f], m.intercepts[f], m.classes[f], m.settings[f] = W, b, cl, chosen
        return m

    @staticmethod
    def fit_seconds(rows: int, search: bool = True) -> float:
        """Rough wall time of fit_tuned with the partner's search (6 fits per field, word + char), measured on
        2 CPU cores: ~180 s for 4,483 rows and two fields (20 and 3 classes); without the search (`fixed`
        settings) one fit per field instead of six."""
        return 0.04 * min(rows, SELECT_ROWS) / (1 if search else 6) + 0.01 * rows

    def logprobs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        X = self.features(texts)
        out = {}
        for f in self.coefs:
            z = np.asarray(X @ self.coefs[f].T) + self.intercepts[f]
            z = z - z.max(1, keepdims=True)
            out[f] = z - np.log(np.exp(z).sum(1, keepdims=True))
        return out

    def save(self, d: Path) -> None:
        from safetensors.numpy import save_file

        meta = {
            "vectorizers": [
                {
                    "vocabulary": {k: int(i) for k, i in v.vocabulary_.items()},
                    "params": {
                        "analyzer": v.analyzer,
                        "ngram_range": list(v.ngram_range),
                        "sublinear_tf": v.sublinear_tf,
                        "lowercase": v.lowercase,
                    },
                }
                for v in self.vectorizers
            ],
            "classes": self.classes,
            "settings": self.settings,
        }
        (d / "lexical.json").write_text(json.dumps(meta, ensure_ascii=False))
        tensors = {f"idf.{i}": v.idf_.astype(np.float32) for i, v in enumerate(self.vectorizers)}
        for f in self.coefs:
            # fp16 halves the file; the logits move by ~1e-3, far below any decision margin that matters
            tensors[f"coef.{f}"] = np.ascontiguousarray(self.coefs[f], dtype=np.float16)
            tensors[f"intercept.{f}"] = self.intercepts[f]
        save_file(tensors, str(d / "lexical.safetensors"))

    @classmethod
    def load(cls, d: Path) -> LexicalModel:
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        meta = json.loads((d / "lexical.json").read_text())
        t = load_file(str(d / "lexical.safetensors"))
        if "vectorizers" not in meta:  # adapters saved before feature blocks: one word block, one idf
            meta["vectorizers"] = [{"vocabulary": meta["vocabulary"], "params": meta["params"]}]
            t["idf.0"] = t["idf"]
        vecs = []
        for i, spec in enumerate(meta["vectorizers"]):
            p = spec["params"]
            vec = TfidfVectorizer(
                vocabulary=spec["vocabulary"],
                analyzer=p.get("analyzer", "word"),
                ngram_range=tuple(p["ngram_range"]),
                sublinear_tf=p["sublinear_tf"],
                lowercase=p["lowercase"],
            )
            vec.idf_ = t[f"idf.{i}"].astype(np.float64)
            vecs.append(vec)
        classes = meta["classes"]
        coefs = {f: t[f"coef.{f}"].astype(np.float32) for f in classes}
        inter = {f: t[f"intercept.{f}"] for f in classes}
        m = cls(vecs, coefs, inter, classes)
        old_c = meta.get("C")
        m.settings = meta.get("settings") or ({f: {"C": old_c, "class_weight": None} for f in classes} if old_c else {})
        return m
