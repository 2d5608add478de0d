"""Seed a ticket with evidence: earlier similar tickets (one reviewed, with a sent reply) and a synced knowledge base
whose passages the draft cites, recorded on the suggestion as the drafting stage records them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.db import session_scope
from service.domain.tables import LabelCorrection, Suggestion, SuggestionStatus, utcnow
from service.knowledge.retrieval import evidence_for
from service.knowledge.source import ArticleRecord
from service.knowledge.sync import apply_record
from tests.knowledge.conftest import articles
from tests.review.conftest import seed_suggestion

VPN_BODY = (
    "Since this morning GlobalProtect says authentication failed when I connect to the VPN from home. "
    "My password should still be valid. Please help, I need the intranet."
)


@dataclass(frozen=True)
class Seeded:
    """Ids a test asserts on."""

    suggestion_id: int
    reviewed_key: str
    unrelated_key: str
    cited_numbers: list[str]


def seed_evidence(engine: Engine) -> Seeded:
    """Three earlier tickets, the labelled knowledge base, and a pending suggestion grounded in it."""
    with session_scope(engine) as session:
        for a in articles():
            url = f"https://acme.service-now.com/kb_view.do?sysparm_article={a['id']}"
            record = ArticleRecord(a["id"], a["id"], "kb", a["title"], url, a["lang"], a["html"], "1", None, True)
            apply_record(session, "servicenow", record, now=utcnow())
    earlier = seed_suggestion(
        engine,
        subject="VPN authentication failed",
        body="GlobalProtect VPN says authentication failed since my password change.",
        key="ITSD-7",
    )
    seed_suggestion(engine, subject="VPN slow", body="The VPN from home is slow in the evening.", key="ITSD-8")
    seed_suggestion(engine, subject="Printer jam", body="Printer on floor 3 jams every morning.", key="ITSD-9")
    with Session(engine) as s:
        row = s.get(Suggestion, earlier)
        assert row is not None
        row.status = SuggestionStatus.delivered
        row.final_reply = "Your password had expired: please change it in the self-service portal, then reconnect."
        row.decided_at = datetime.now(UTC)
        row.reviewer = "agent"
        s.add(row)
        s.add(LabelCorrection(ticket_id=row.ticket_id, field="queue", new_value="Remote Access", origin="review"))
        s.commit()
    sid = seed_suggestion(
        engine,
        subject="GlobalProtect: authentication failed",
        body=VPN_BODY,
        key="ITSD-42",
        draft="Hello, please check whether your password expired, then reconnect GlobalProtect [1].",
        flags=["language:en"],
    )
    with Session(engine) as s:
        sources = evidence_for(s, text=f"GlobalProtect: authentication failed\n{VPN_BODY}", language="en", k=2)
        row = s.get(Suggestion, sid)
        assert row is not None and sources
        row.sources = [src.as_json() for src in sources]
        s.add(row)
        s.commit()
    return Seeded(sid, "ITSD-7", "ITSD-9", [src.number for src in sources])
