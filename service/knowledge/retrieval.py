"""Evidence for a draft: the best knowledge-base passages for a ticket, above a score floor, within a budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlmodel import Session, col, select

from service.domain.knowledge import KbArticle, KbPassage
from service.knowledge.index import search_passages
from service.knowledge.text import estimate_tokens, language_code

_CANDIDATES_PER_RESULT = 5  # several passages of one article compete for its single slot


@dataclass(frozen=True)
class Source:
    """One cited passage: which article, where to read it, what it says, and how well it matched."""

    article_id: int
    passage_id: int
    source: str  # servicenow | confluence
    number: str  # KB0010001 / page id
    title: str
    url: str | None
    passage: str
    score: float
    language: str
    kind: str = "kb"

    def as_json(self) -> dict[str, Any]:
        """The form stored in Suggestion.sources (the review UI and API read it back)."""
        out = asdict(self)
        out["score"] = round(self.score, 3)
        return out


def evidence_for(
    session: Session,
    *,
    text: str,
    language: str | None = None,
    k: int = 3,
    token_budget: int = 600,
    min_score: float = 4.0,
) -> list[Source]:
    """Up to `k` passages (one per article) scoring at least `min_score`, best first, within `token_budget`.

    Passages in the ticket's `language` are searched first; the other languages only when none of them scores
    `min_score` (or the language is unknown).
    Nothing scores high enough -> an empty list: the draft must then say less rather than invent. The budget
    counts title and passage (about four characters a token); a passage that does not fit is left out, except
    the best one, which is cut to fit.
    """
    if k <= 0 or token_budget <= 0 or not text.strip():
        return []
    wanted = language_code(language, "") if language else ""
    limit = k * _CANDIDATES_PER_RESULT
    hits: list[tuple[int, float]] = []
    if wanted:  # the ticket's own language first; other languages only when it has nothing good enough
        hits = [h for h in search_passages(session, text, limit=limit, language=wanted) if h[1] >= min_score]
    if not hits:
        hits = [h for h in search_passages(session, text, limit=limit) if h[1] >= min_score]
    if not hits:
        return []
    rows = session.exec(
        select(KbPassage, KbArticle)
        .join(KbArticle, col(KbArticle.id) == col(KbPassage.article_id))
        .where(col(KbPassage.id).in_([pid for pid, _ in hits]))
    ).all()
    by_id = {p.id: (p, a) for p, a in rows}
    ranked = [h for h in hits if h[0] in by_id]
    chosen: list[Source] = []
    seen_articles: set[int] = set()
    used = 0
    for pid, score in ranked:
        passage, article = by_id[pid]
        if article.id in seen_articles:
            continue
        body = passage.text
        cost = estimate_tokens(f"{article.title}\n{body}")
        if used + cost > token_budget:
            if chosen:
                continue
            body = body[: max(0, (token_budget - estimate_tokens(article.title)) * 4)].rstrip()
            if not body:
                break
            cost = token_budget
        assert article.id is not None and passage.id is not None
        seen_articles.add(article.id)
        used += cost
        chosen.append(
            Source(
                article_id=article.id,
                passage_id=passage.id,
                source=article.source,
                number=article.number,
                title=article.title,
                url=article.url,
                passage=body,
                score=score,
                language=passage.language,
            )
        )
        if len(chosen) >= k:
            break
    return chosen


def render_evidence(sources: list[Source]) -> str:
    """Sources as numbered, quoted data for a prompt (each line prefixed, so no passage can pose as instructions)."""
    blocks = []
    for i, s in enumerate(sources, 1):
        quoted = "\n".join(f"> {line}" for line in s.passage.splitlines())
        blocks.append(f"[{i}] {s.title} ({s.url or s.number})\n{quoted}")
    return "\n\n".join(blocks)
