"""Recall@5 of knowledge-base retrieval on two labelled sets, for SQLite FTS5, PostgreSQL and a BM25 library.

Sets (say how they were built, README "Connecting a knowledge base"):
* written: 22 short IT / billing articles (16 English, 6 German) written for this test, and 44 tickets written
  from them in a customer's words (2 per article, paraphrased, not copied), plus 10 tickets no article answers;
  tests/knowledge/data/.
* replies: every distinct agent reply in ../shared/data/tickets/train.jsonl (English and German) stored as an
  "article"; the query is the ticket it answered (subject + body); 600 tickets sampled with a fixed seed. Hard and
  noisy: many replies are generic, and near-duplicate tickets have near-duplicate replies, so a "miss" may be a
  fine answer.

Engines: the service's own (`service.knowledge`: FTS5 bm25 on SQLite, BM25 over tsvectors in PostgreSQL), and
`bm25s` with the same stemmer and stop words as the comparison library (pip install bm25s; not a dependency).

    python bench/kb_recall.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--replies 600]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlmodel import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.db import make_engine, session_scope  # noqa: E402
from service.domain.knowledge import KbArticle, KbPassage  # noqa: E402
from service.domain.tables import utcnow  # noqa: E402
from service.knowledge.index import search_passages  # noqa: E402
from service.knowledge.retrieval import evidence_for  # noqa: E402
from service.knowledge.source import ArticleRecord  # noqa: E402
from service.knowledge.sync import apply_record  # noqa: E402
from service.knowledge.text import analyse, query_terms  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402

DATA = REPO / "tests" / "knowledge" / "data"
TICKETS = REPO.parent / "shared" / "data" / "tickets" / "train.jsonl"
K = 5

Article = dict[str, Any]  # id, lang, title, html
Query = dict[str, Any]  # text, lang, article (id or None)


def written_set() -> tuple[list[Article], list[Query]]:
    """The hand-written articles and tickets."""
    articles = json.loads((DATA / "kb_articles.json").read_text())
    queries = [json.loads(line) for line in (DATA / "kb_questions.jsonl").read_text().splitlines() if line.strip()]
    return articles, queries


def replies_set(n: int, seed: int = 7) -> tuple[list[Article], list[Query]]:
    """Distinct replies as articles, a seeded sample of their tickets as queries."""
    rows = [json.loads(line) for line in TICKETS.read_text().splitlines()]
    seen: set[str] = set()
    articles: list[Article] = []
    by_id: dict[str, dict[str, Any]] = {}
    for r in rows:
        reply = (r.get("reply") or "").strip()
        if not reply or r["language"] not in ("en", "de") or reply in seen:
            continue
        seen.add(reply)
        articles.append({"id": r["id"], "lang": r["language"], "title": "", "html": reply})
        by_id[r["id"]] = r
    picked = random.Random(seed).sample(sorted(by_id), min(n, len(by_id)))
    queries = [
        {"text": f"{by_id[i]['subject'] or ''}\n{by_id[i]['body']}", "lang": by_id[i]["language"], "article": i}
        for i in picked
    ]
    return articles, queries


def load(url: str, articles: list[Article]) -> None:
    """Store the articles through the sync's own apply step (passages, index)."""
    settings = Settings(database_url=url)
    upgrade(settings)
    engine = make_engine(settings)
    now = utcnow()
    for start in range(0, len(articles), 200):
        with session_scope(engine) as session:
            for a in articles[start : start + 200]:
                html = (
                    a["html"]
                    if a["html"].lstrip().startswith("<")
                    else "".join(f"<p>{p}</p>" for p in a["html"].split("\n\n"))
                )
                record = ArticleRecord(a["id"], a["id"], "bench", a["title"], None, a["lang"], html, "1", None, True)
                apply_record(session, "bench", record, now=now)
    engine.dispose()


def service_ranker(url: str) -> Callable[[Query], list[str]]:
    """Article ids the service's retrieval ranks first (one passage per article)."""
    engine = make_engine(Settings(database_url=url))

    def rank(q: Query) -> list[str]:
        with Session(engine) as session:
            hits = search_passages(session, q["text"], limit=K * 5, language=q["lang"])
            out: list[str] = []
            for pid, _ in hits:
                passage = session.get(KbPassage, pid)
                article = session.get(KbArticle, passage.article_id) if passage else None
                if article and article.external_id not in out:
                    out.append(article.external_id)
            return out[:K]

    return rank


def bm25s_ranker(articles: list[Article]) -> Callable[[Query], list[str]]:
    """bm25s over the same analysis (snowball stems, stop words), one index per language."""
    import bm25s

    from service.knowledge.text import html_to_text

    indexes: dict[str, tuple[Any, list[str]]] = {}
    for lang in sorted({a["lang"] for a in articles}):
        sub = [a for a in articles if a["lang"] == lang]
        corpus = [analyse(f"{a['title']}\n{html_to_text(a['html'])}", lang) for a in sub]
        model = bm25s.BM25(k1=1.2, b=0.75, method="robertson")
        model.index(bm25s.tokenization.Tokenized(*_vocab(corpus)), show_progress=False)
        indexes[lang] = (model, [a["id"] for a in sub])

    def rank(q: Query) -> list[str]:
        out: list[tuple[float, str]] = []
        for lang, (model, ids) in indexes.items():
            if lang != q["lang"]:  # the ticket's language, as the service searches first
                continue
            vocab = model.vocab_dict
            terms = [t for t, n in query_terms(q["text"], lang).items() for _ in range(n) if t in vocab]
            if not terms:
                continue
            docs, scores = model.retrieve([[vocab[t] for t in terms]], k=min(K, len(ids)), show_progress=False)
            out += [(float(s), ids[int(d)]) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
        return [i for _, i in sorted(out, reverse=True)[:K]]

    return rank


def _vocab(corpus: list[list[str]]) -> tuple[list[list[int]], dict[str, int]]:
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in corpus]
    return ids, vocab


def recall(rank: Callable[[Query], list[str]], queries: list[Query]) -> tuple[float, float]:
    """(recall@5 over answerable queries, seconds per query)."""
    answerable = [q for q in queries if q["article"]]
    started = time.perf_counter()
    hits = sum(q["article"] in rank(q) for q in answerable)
    return hits / len(answerable), (time.perf_counter() - started) / len(answerable)


def thresholds(url: str, queries: list[Query]) -> None:
    """Top score of answerable vs unanswerable written tickets, and what each floor keeps."""
    engine = make_engine(Settings(database_url=url))
    with Session(engine) as session:
        tops = []
        for q in queries:
            found = evidence_for(session, text=q["text"], language=q["lang"], k=1, token_budget=10_000, min_score=0)
            right = bool(found) and (q["article"] == found[0].number)
            tops.append((found[0].score if found else 0.0, q["article"] is not None, right))
    for floor in (2.0, 3.0, 4.0, 5.0, 6.0, 8.0):
        kept_right = sum(1 for s, a, r in tops if s >= floor and r)
        kept_wrong = sum(1 for s, a, r in tops if s >= floor and not r)
        unanswerable_cited = sum(1 for s, a, _ in tops if s >= floor and not a)
        print(
            f"    floor {floor:4.1f}: top-1 right and kept {kept_right}/{sum(1 for _, a, _ in tops if a)}, "
            f"wrong kept {kept_wrong}, unanswerable tickets citing something {unanswerable_cited}/"
            f"{sum(1 for _, a, _ in tops if not a)}"
        )


def main() -> int:
    """Print recall@5 per set and engine."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test", help="'' skips it")
    parser.add_argument("--replies", type=int, default=600, help="tickets sampled from train.jsonl")
    args = parser.parse_args()
    sets = {"written": written_set(), "replies": replies_set(args.replies)}
    for name, (articles, queries) in sets.items():
        print(f"{name}: {len(articles)} articles, {sum(1 for q in queries if q['article'])} answerable tickets")
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/kb.db"
            load(url, articles)
            r, s = recall(service_ranker(url), queries)
            print(f"  SQLite FTS5 (service)      recall@5 {r:.3f}  ({s * 1000:.0f} ms/query)")
            if name == "written":
                thresholds(url, queries)
        if args.pg:
            db = f"itsm_kb_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{db}"'))
            url = args.pg.rsplit("/", 1)[0] + f"/{db}"
            try:
                load(url, articles)
                r, s = recall(service_ranker(url), queries)
                print(f"  PostgreSQL (service)       recall@5 {r:.3f}  ({s * 1000:.0f} ms/query)")
                if name == "written":
                    thresholds(url, queries)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
                admin.dispose()
        try:
            r, s = recall(bm25s_ranker(articles), queries)
            print(f"  bm25s (library, same terms) recall@5 {r:.3f}  ({s * 1000:.0f} ms/query)")
        except ImportError:
            print("  bm25s not installed: skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
