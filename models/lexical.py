"""The lexical model: TF-IDF + logistic regression. It is both the evaluation baseline and the ensemble partner
of the LLM head; saved as JSON + safetensors (no pickle)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def make_vectorizer() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=40000, strip_accents=None, lowercase=True
    )


class LexicalModel:
    """One shared TF-IDF vocabulary, one multinomial logistic regression per label field."""

    def __init__(
        self,
        vectorizer: Any,
        coefs: dict[str, np.ndarray],
        intercepts: dict[str, np.ndarray],
        classes: dict[str, list[str]],
    ) -> None:
        self.vectorizer = vectorizer
        self.coefs = coefs
        self.intercepts = intercepts
        self.classes = classes
        self.C: float | None = None

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Mapping[str, Sequence[str | None]], C: float = 10.0) -> LexicalModel:
        from sklearn.linear_model import LogisticRegression

        vec = make_vectorizer()
        X = vec.fit_transform(texts)
        coefs, inter, classes = {}, {}, {}
        for f, ys in labels.items():
            idx = [i for i, y in enumerate(ys) if y]
            clf = LogisticRegression(C=C, max_iter=2000)
            clf.fit(X[idx], [ys[i] for i in idx])
            cl = [str(c) for c in clf.classes_]
            W, b = clf.coef_, clf.intercept_
            if len(cl) == 2:  # binary: sklearn keeps one row; expand to a softmax over two
                W = np.vstack([-W[0] / 2, W[0] / 2])
                b = np.array([-b[0] / 2, b[0] / 2])
            coefs[f], inter[f], classes[f] = W.astype(np.float32), b.astype(np.float32), cl
        return cls(vec, coefs, inter, classes)

    @classmethod
    def fit_tuned(
        cls,
        texts: Sequence[str],
        labels: Mapping[str, Sequence[str | None]],
        val_texts: Sequence[str],
        val_labels: Mapping[str, Sequence[str | None]],
        Cs: Sequence[float] = (3.0, 10.0, 30.0),
    ) -> LexicalModel:
        """C chosen by mean validation macro-F1 over the fields (plain fit with C=10 without validation data)."""
        from sklearn.metrics import f1_score

        if not val_texts:
            m = cls.fit(texts, labels, C=10.0)
            m.C = 10.0
            return m
        best: tuple[float, LexicalModel | None] = (-1.0, None)
        for C in Cs:
            m = cls.fit(texts, labels, C=C)
            m.C = C
            lp = m.logprobs(val_texts)
            scores = []
            for f, ys in val_labels.items():
                keep = [i for i, y in enumerate(ys) if y]
                pred = [m.classes[f][j] for j in lp[f].argmax(1)]
                scores.append(
                    f1_score([ys[i] for i in keep], [pred[i] for i in keep], average="macro", zero_division=0)
                )
            if float(np.mean(scores)) > best[0]:
                best = (float(np.mean(scores)), m)
        assert best[1] is not None
        return best[1]

    def logprobs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        X = self.vectorizer.transform(texts)
        out = {}
        for f in self.coefs:
            z = np.asarray(X @ self.coefs[f].T) + self.intercepts[f]
            z = z - z.max(1, keepdims=True)
            out[f] = z - np.log(np.exp(z).sum(1, keepdims=True))
        return out

    def save(self, d: Path) -> None:
        from safetensors.numpy import save_file

        v = self.vectorizer
        meta = {
            "vocabulary": {k: int(i) for k, i in v.vocabulary_.items()},
            "params": {"ngram_range": list(v.ngram_range), "sublinear_tf": v.sublinear_tf, "lowercase": v.lowercase},
            "classes": self.classes,
            "C": self.C,
        }
        (d / "lexical.json").write_text(json.dumps(meta, ensure_ascii=False))
        tensors = {"idf": v.idf_.astype(np.float32)}
        for f in self.coefs:
            tensors[f"coef.{f}"] = np.ascontiguousarray(self.coefs[f], dtype=np.float32)
            tensors[f"intercept.{f}"] = self.intercepts[f]
        save_file(tensors, str(d / "lexical.safetensors"))

    @classmethod
    def load(cls, d: Path) -> LexicalModel:
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        meta = json.loads((d / "lexical.json").read_text())
        t = load_file(str(d / "lexical.safetensors"))
        p = meta["params"]
        vec = TfidfVectorizer(
            vocabulary=meta["vocabulary"],
            ngram_range=tuple(p["ngram_range"]),
            sublinear_tf=p["sublinear_tf"],
            lowercase=p["lowercase"],
        )
        vec.idf_ = t["idf"].astype(np.float64)
        classes = meta["classes"]
        coefs = {f: t[f"coef.{f}"].astype(np.float32) for f in classes}
        inter = {f: t[f"intercept.{f}"] for f in classes}
        m = cls(vec, coefs, inter, classes)
        m.C = meta.get("C")
        return m
