"""Similar earlier tickets: reviewed first, final labels, sent replies, and a note that names them by key only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import LabelCorrection, Suggestion, SuggestionStatus, Ticket, Triage
from service.knowledge.similar import note_lines, similar_tickets, ticket_link
from service.settings import Settings
from workers.note import build_note


def _ticket(
    session: Session,
    key: str,
    subject: str,
    body: str,
    *,
    queue: str = "Network",
    reply: str | None = None,
    status: str | None = None,
    url: bool = True,
) -> Ticket:
    ticket = Ticket(
        source="jira",
        external_id=key.split("-")[1],
        external_key=key,
        subject=subject,
        body=body,
        url=f"https://acme.atlassian.net/browse/{key}" if url else None,
        status=status,
    )
    session.add(ticket)
    session.flush()
    assert ticket.id is not None
    triage = Triage(
        ticket_id=ticket.id,
        predictions={"queue": {"label": queue, "confidence": 0.7}, "priority": {"label": "P3", "confidence": 0.6}},
        flags=["language:en"],
    )
    session.add(triage)
    session.flush()
    assert triage.id is not None
    if reply is not None:
        session.add(
            Suggestion(
                triage_id=triage.id,
                ticket_id=ticket.id,
                draft="draft",
                final_reply=reply,
                status=SuggestionStatus.delivered,
                decided_at=datetime.now(UTC),
            )
        )
    return ticket


def test_reviewed_tickets_come_first_with_final_labels_and_sent_replies(engine: Engine, settings: Settings) -> None:
    with Session(engine, expire_on_commit=False) as s:
        _ticket(s, "IT-1", "VPN keeps disconnecting", "GlobalProtect VPN disconnects every ten minutes at home")
        reviewed = _ticket(
            s, "IT-2", "VPN disconnects", "VPN drops after a few minutes", reply="Please update GlobalProtect to 6.2."
        )
        s.add(LabelCorrection(ticket_id=reviewed.id, field="queue", old_value="Network", new_value="Remote Access"))
        _ticket(s, "IT-3", "Printer jam", "The printer on floor 2 jams")
        _ticket(
            s, "IT-4", "Old VPN issue", "VPN disconnects every ten minutes GlobalProtect at home", status="Resolved"
        )
        current = _ticket(s, "IT-5", "GlobalProtect VPN disconnects", "My VPN disconnects every ten minutes at home")
        later = _ticket(s, "IT-6", "VPN disconnects too", "VPN disconnects every ten minutes GlobalProtect at home")
        s.commit()
        found = similar_tickets(s, current, k=3, settings=settings)
    keys = [t.key for t in found]
    assert later.external_key not in keys and "IT-3" not in keys  # never a later ticket; nothing unrelated
    assert set(keys[:2]) == {"IT-2", "IT-4"} and keys[2] == "IT-1"  # reviewed / resolved before closer text
    it2 = next(t for t in found if t.key == "IT-2")
    assert it2.reviewed and it2.reply == "Please update GlobalProtect to 6.2."
    assert it2.labels == {"queue": "Remote Access", "priority": "P3"}
    assert it2.url == "https://acme.atlassian.net/browse/IT-2"

    note = "\n".join(note_lines(found))
    assert "IT-2 https://acme.atlassian.net/browse/IT-2 (P3, Remote Access)" in note
    assert "GlobalProtect" not in note and "update" not in note  # no other customer's text


def test_links_are_built_from_the_settings_when_the_ticket_has_none(settings: Settings) -> None:
    ticket = Ticket(source="jira", external_id="1", external_key="IT-9", url=None)
    assert ticket_link(ticket, settings) is None
    jira = Settings(**{**settings.model_dump(), "jira": {**settings.jira.model_dump(), "base_url": "https://a.net/"}})
    assert ticket_link(ticket, jira) == "https://a.net/browse/IT-9"
    sn = Ticket(source="servicenow", external_id="abc", external_key="INC1", url="javascript:alert(1)")
    sn_settings = Settings(
        **{**settings.model_dump(), "servicenow": {**settings.servicenow.model_dump(), "instance_url": "https://x.sn"}}
    )
    assert ticket_link(sn, sn_settings) == "https://x.sn/nav_to.do?uri=incident.do?sys_id=abc"


def test_the_internal_note_lists_similar_tickets_by_key_and_link(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as s:
        _ticket(s, "IT-1", "Mailbox full", "Outlook mailbox is full cannot send", reply="Archive old mail please.")
        current = _ticket(s, "IT-2", "Outlook mailbox full", "my Outlook mailbox is full, cannot send")
        s.commit()
        found = similar_tickets(s, current)
    note = build_note({}, draft_pending=False, flags=[], model_version="m", adapter_version=None, similar=found)
    assert "Similar earlier tickets:\n- IT-1 https://acme.atlassian.net/browse/IT-1" in note
    assert "Archive" not in note
    assert "Similar" not in build_note({}, draft_pending=False, flags=[], model_version="m", adapter_version=None)
