"""What a suggestion rests on, for the ticket page and the API: similar earlier tickets and cited passages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from service.knowledge.similar import SimilarTicket, similar_tickets
from service.review.queries import SuggestionView
from service.settings import Settings

SIMILAR_SHOWN = 3


@dataclass(frozen=True)
class CitedSource:
    """One passage the draft was grounded on, as recorded on the suggestion (safe to render)."""

    title: str
    url: str | None
    number: str
    source: str
    passage: str
    score: float | None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """Similar tickets (looked up now: their labels and replies change) and the suggestion's recorded sources."""

    similar: list[SimilarTicket]
    sources: list[CitedSource]


def cited_sources(raw: list[dict[str, Any]] | None) -> list[CitedSource]:
    """The suggestion's `sources` column read defensively (older rows: None; links only when http(s))."""
    out: list[CitedSource] = []
    for item in raw or []:
        if not isinstance(item, dict):
            continue
        url = item.get("url")
        score = item.get("score")
        out.append(
            CitedSource(
                title=str(item.get("title") or item.get("number") or "(untitled)"),
                url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
                number=str(item.get("number") or ""),
                source=str(item.get("source") or item.get("kind") or ""),
                passage=str(item.get("passage") or ""),
                score=float(score) if isinstance(score, int | float) else None,
                raw=item,
            )
        )
    return out


def evidence_for_view(session: Session, view: SuggestionView, settings: Settings | None) -> Evidence:
    """Similar earlier tickets of the view's ticket and the sources its draft cited."""
    return Evidence(
        similar=similar_tickets(session, view.ticket, k=SIMILAR_SHOWN, settings=settings),
        sources=cited_sources(view.suggestion.sources),
    )
