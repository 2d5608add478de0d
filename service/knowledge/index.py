"""Full-text search over passages and tickets: SQLite FTS5 on the embedded default, PostgreSQL in production.

Both rank passages with the same BM25 (k1 1.2, b 0.75, FTS5's idf): FTS5 computes it itself; on PostgreSQL the
GIN index finds the candidates and one SQL statement scores them from their tsvectors. Each passage is stemmed in
its own language (PostgreSQL: its text search configuration; SQLite: the same snowball stemmer, in Python), and a
query is analysed in the language searched. A ticket is searched in its own language first (retrieval falls back to
the others): matching an English ticket against German passages with German analysis ranks German articles that
merely share a product name above the English answer (recall@5 on the replies set 0.44 across languages vs 0.78 in
the ticket's language, README). A query word repeated in the ticket counts up to three times (+5 points).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlmodel import Session

from service.domain.knowledge import KbPassage
from service.knowledge.text import analyse, plain_terms, query_terms, ts_config

BM25_K1 = 1.2
BM25_B = 0.75
MAX_QUERY_TERMS = 256
# PostgreSQL scores candidates by unnesting their vectors: fewer query terms, fewer candidates (a ticket's most
# repeated words are kept). 4,039 passages: about 0.5 s a query with 256 terms on this 2-core machine.
MAX_PG_QUERY_TERMS = 96
MAX_TICKET_QUERY_TERMS = 64  # tickets: a bound on the OR query over a table that only grows

_PG_PASSAGES = """
WITH q AS MATERIALIZED (
  SELECT u.lexeme, least(cardinality(u.positions), 3) AS qtf
  FROM unnest(to_tsvector(CAST(:cfg AS regconfig), :text)) AS u
  ORDER BY qtf DESC, u.lexeme
  LIMIT :max_terms
), tsq AS MATERIALIZED (
  SELECT CAST(string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | ') AS tsquery)
    AS query
  FROM q
), stats AS MATERIALIZED (
  SELECT count(*) AS n, greatest(avg(n_terms), 1) AS avgdl FROM kb_passage WHERE ts_config = CAST(:cfg_name AS varchar)
), candidates AS MATERIALIZED (
  SELECT p.id, p.n_terms, p.search_vector
  FROM kb_passage p CROSS JOIN tsq
  WHERE p.ts_config = CAST(:cfg_name AS varchar) AND p.search_vector @@ tsq.query
), terms AS MATERIALIZED (
  SELECT c.id, c.n_terms, u.lexeme, cardinality(u.positions) AS tf
  FROM candidates c CROSS JOIN LATERAL unnest(c.search_vector) AS u
), hits AS MATERIALIZED (
  SELECT t.id, t.n_terms, t.lexeme, t.tf, q.qtf FROM terms t JOIN q ON q.lexeme = t.lexeme
), df AS (
  SELECT lexeme, count(*) AS df FROM hits GROUP BY lexeme
)
SELECT h.id, sum(
  h.qtf * greatest(ln((s.n - df.df + 0.5) / (df.df + 0.5)), 1e-6)
  * h.tf * (:k1 + 1) / (h.tf + :k1 * (1 - :b + :b * h.n_terms / s.avgdl))
) AS score
FROM hits h JOIN df USING (lexeme) CROSS JOIN stats s
GROUP BY h.id
ORDER BY score DESC, h.id
LIMIT :limit
"""

# The document expression is migration 0005's ix_ticket_search, spelled the same so the index serves it.
_PG_TICKETS = """
SELECT id, ts_rank(to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || coalesce(body, '')), q, 1) AS score
FROM ticket, to_tsquery('simple', :tsquery) AS q
WHERE id < :before AND to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || coalesce(body, '')) @@ q
ORDER BY score DESC, id DESC
LIMIT :limit
"""


def backend(session: Session) -> str:
    """'postgresql' or 'sqlite' (the two databases the service supports)."""
    return session.get_bind().dialect.name


def _fts5_query(terms: Iterable[tuple[str, int]]) -> str:
    """An FTS5 OR query; a term repeated n times counts n times in bm25()."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term, n in terms for _ in range(n))


def index_passages(session: Session, passages: Sequence[KbPassage]) -> None:
    """Make flushed passages searchable (SQLite writes FTS5 rows; PostgreSQL's trigger already did)."""
    if backend(session) != "sqlite" or not passages:
        return
    rows = [{"id": p.id, "terms": " ".join(analyse(f"{p.title}\n{p.text}", p.language))} for p in passages]
    session.execute(text("INSERT INTO kb_passage_fts(rowid, terms) VALUES (:id, :terms)"), rows)


def unindex_passages(session: Session, passage_ids: Sequence[int]) -> None:
    """Forget passages before their rows are deleted (SQLite's FTS5 table has no foreign key)."""
    if backend(session) != "sqlite" or not passage_ids:
        return
    session.execute(text("DELETE FROM kb_passage_fts WHERE rowid = :id"), [{"id": i} for i in passage_ids])


def passage_terms(passage: KbPassage) -> int:
    """BM25 document length of a passage: its analysed title and text."""
    return len(analyse(f"{passage.title}\n{passage.text}", passage.language))


def search_passages(
    session: Session, query: str, *, limit: int, language: str | None = None
) -> list[tuple[int, float]]:
    """(passage id, BM25 score) best first: passages in `language`, or in every language the KB holds (None)."""
    if not query.strip() or limit <= 0:
        return []
    found: list[tuple[int, float]] = []
    if backend(session) == "postgresql":
        configs = session.execute(text("SELECT DISTINCT ts_config FROM kb_passage")).scalars().all()
        if language is not None:
            configs = [c for c in configs if c == ts_config(language)]
        for cfg in configs:
            params = {"cfg": cfg, "cfg_name": cfg, "text": query, "max_terms": MAX_PG_QUERY_TERMS}
            rows = session.execute(text(_PG_PASSAGES), {**params, "k1": BM25_K1, "b": BM25_B, "limit": limit}).all()
            found += [(int(i), float(s)) for i, s in rows]
    else:
        languages = session.execute(text("SELECT DISTINCT language FROM kb_passage")).scalars().all()
        if language is not None:
            languages = [lang for lang in languages if lang == language]
        for lang in languages:
            match = _fts5_query(query_terms(query, lang, limit=MAX_QUERY_TERMS).items())
            if not match:
                continue
            rows = session.execute(
                text(
                    "SELECT f.rowid, -bm25(kb_passage_fts) AS score FROM kb_passage_fts AS f "
                    "JOIN kb_passage AS p ON p.id = f.rowid "
                    "WHERE kb_passage_fts MATCH :match AND p.language = :language "
                    "ORDER BY bm25(kb_passage_fts) LIMIT :limit"
                ),
                {"match": match, "language": lang, "limit": limit},
            ).all()
            found += [(int(i), float(s)) for i, s in rows]
    found.sort(key=lambda row: (-row[1], row[0]))
    return found[:limit]


def search_tickets(
    session: Session, query: str, *, language: str, before_id: int, limit: int
) -> list[tuple[int, float]]:
    """(ticket id, score) of tickets older than `before_id` that share words with `query`, best first."""
    words = plain_terms(query, language, limit=MAX_TICKET_QUERY_TERMS)
    if not words or limit <= 0:
        return []
    if backend(session) == "postgresql":
        tsquery = " | ".join(words)
        rows = session.execute(
            text(_PG_TICKETS),
            {"tsquery": tsquery, "before": before_id, "limit": limit},
        ).all()
    else:
        rows = session.execute(
            text(
                "SELECT rowid, -bm25(ticket_fts) AS score FROM ticket_fts "
                "WHERE ticket_fts MATCH :match AND rowid < :before ORDER BY bm25(ticket_fts) LIMIT :limit"
            ),
            {"match": _fts5_query(words.items()), "before": before_id, "limit": limit},
        ).all()
    return [(int(i), float(s)) for i, s in rows]
