"""Article text: HTML and Confluence storage format to plain text, passages, per-language analysis; the ticket index."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.domain.tables import Ticket
from service.knowledge.index import search_tickets
from service.knowledge.text import analyse, html_to_text, language_code, split_passages, ts_config
from tests.fakes.fake_kb import contract


def test_storage_format_becomes_readable_text_without_macro_parameters_or_scripts() -> None:
    page = contract("confluence_pages_with_body.json")["results"][0]
    out = html_to_text(page["body"]["storage"]["value"] + "<script>alert(1)</script><style>p{}</style>")
    assert out.splitlines()[0] == "Use the self-service password reset page."
    assert "You need a registered mobile number." in out and "Enter the one-time code." in out
    assert "Before you start" not in out and "alert" not in out and "p{}" not in out
    assert html_to_text("") == "" and html_to_text("   ") == ""
    assert html_to_text("plain <b>text</b> &amp; more\x00") == "plain text & more"


def test_passages_pack_paragraphs_and_cut_long_ones_at_sentences() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 30 for i in range(10)]
    passages = split_passages("\n\n".join(paragraphs), max_chars=400)
    assert all(len(p) <= 400 for p in passages) and len(passages) >= 5
    assert "".join(passages).replace("\n", "").replace(" ", "") == "".join(paragraphs).replace(" ", "")
    long_sentence = "x" * 1000
    assert all(len(p) <= 400 for p in split_passages(long_sentence, max_chars=400))


def test_analysis_stems_in_the_passage_language() -> None:
    assert analyse("Die Druckaufträge hängen", "de") == ["druckauftrag", "hang"]  # "die": a stop word
    assert analyse("Druckauftrag", "de") == ["druckauftrag"]
    assert analyse("printers printing the printer", "en") == ["printer", "print", "printer"]
    assert analyse("ok 42 a", "xx") == ["ok"]  # unknown language: no stemming, no stop words; digits dropped
    assert (language_code("de_DE"), language_code("EN-us"), language_code(None), language_code("!!", "fr")) == (
        "de",
        "en",
        "en",
        "fr",
    )
    assert (ts_config("de"), ts_config("pt-BR"), ts_config("ja")) == ("german", "portuguese", "simple")


def test_the_ticket_index_follows_inserts_edits_and_deletes(engine: Engine) -> None:
    with Session(engine) as s:
        a = Ticket(source="jira", external_id="1", external_key="A-1", subject="Printer jam", body="Floor 3 printer")
        b = Ticket(source="jira", external_id="2", external_key="A-2", subject="VPN", body="GlobalProtect fails")
        s.add(a)
        s.add(b)
        s.commit()
        assert [i for i, _ in search_tickets(s, "printer jam", language="en", before_id=10**9, limit=5)] == [a.id]
        a.subject, a.body = "Scanner", "The scanner is broken"
        s.add(a)
        s.commit()
        assert search_tickets(s, "printer jam", language="en", before_id=10**9, limit=5) == []
        assert [i for i, _ in search_tickets(s, "scanner", language="en", before_id=10**9, limit=5)] == [a.id]
        s.delete(b)
        s.commit()
        assert search_tickets(s, "globalprotect", language="en", before_id=10**9, limit=5) == []
        if s.get_bind().dialect.name == "sqlite":  # a later migration that rebuilds `ticket` must keep these
            triggers = s.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'ticket'"))
            assert {"ticket_fts_ai", "ticket_fts_ad", "ticket_fts_au"} <= set(triggers.scalars())
