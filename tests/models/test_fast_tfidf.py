"""The bulk TF-IDF vectorisers give scikit-learn's own vectors, for any text (property test over random Unicode)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from models.fast_tfidf import FastCharVectorizer, FastWordVectorizer, fast_vectorizer
from models.lexical import CHAR, WORD, make_vectorizer

CORPUS = [
    "VPN down since this morning, the tunnel drops every few minutes",
    "Das WLAN im Büro bricht ständig ab, bitte prüfen Sie den Router",
    "Rechnung für März doppelt abgebucht; Straße, Maß, İstanbul",
    "Здравствуйте! Не могу войти в почту, пароль не подходит",
    "東京オフィスのプリンターが動きません 印刷できない",
    "a b c ab abc x_y __init__ 42 4.2 e-mail@example.org https://example.org/a?b=c",
    "Password reset needed, password reset needed, password reset needed",
    "  tabs\tand\nnewlines  and   runs   of spaces ",
] * 3


def vectorisers() -> list[TfidfVectorizer]:
    return [
        make_vectorizer(CHAR, min_df=1).fit(CORPUS),
        make_vectorizer(WORD, min_df=1).fit(CORPUS),
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, dtype=np.float32).fit(CORPUS),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), lowercase=False).fit(CORPUS),
        TfidfVectorizer().fit(CORPUS),  # unigrams, plain tf
    ]


FITTED = vectorisers()


def same(fitted: TfidfVectorizer, texts: list[str]) -> None:
    want, got = fitted.transform(texts), fast_vectorizer(fitted).transform(texts)
    assert got.shape == want.shape
    assert abs(want - got).max() <= 1e-6 if want.nnz else got.nnz == 0


@pytest.mark.parametrize("index", range(len(FITTED)))
def test_the_corpus_and_edge_cases_give_scikit_learns_vectors(index: int) -> None:
    same(FITTED[index], [*CORPUS, "", " ", "x", "ab", "\x00", "😀 😀😀", "ÉCOLE école", "word " * 500])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), min_size=1, max_size=6))
def test_any_text_gives_scikit_learns_vectors(texts: list[str]) -> None:
    for fitted in FITTED:
        same(fitted, texts)


def test_a_vectoriser_rebuilt_from_a_saved_vocabulary_is_supported() -> None:
    fitted = FITTED[0]
    rebuilt = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, vocabulary=fitted.vocabulary_)
    rebuilt.idf_ = fitted.idf_
    assert isinstance(fast_vectorizer(rebuilt), FastCharVectorizer)
    same(rebuilt, CORPUS[:4])


def test_unsupported_settings_fall_back_to_scikit_learn() -> None:
    fitted = TfidfVectorizer(stop_words=["the"]).fit(CORPUS)
    assert fast_vectorizer(fitted) is fitted
    with pytest.raises(ValueError):
        FastWordVectorizer(TfidfVectorizer(ngram_range=(1, 3)).fit(CORPUS))
