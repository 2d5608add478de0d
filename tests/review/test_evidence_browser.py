"""Real-browser test: the ticket page shows similar earlier tickets and the knowledge-base articles a draft cites.

The evidence section's screenshot goes to test-artifacts/review/evidence.png (docs/kb-evidence.png in the README is
a copy of it).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from tests.review.evidence_seed import seed_evidence
from tests.review.test_browser import CHROMIUM, browser, e2e_settings, log_in, page, shot, site  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium"),
]


def test_the_ticket_page_shows_similar_tickets_and_cited_articles(page: Any, site: str, engine: Engine) -> None:  # noqa: F811
    seeded = seed_evidence(engine)
    log_in(page, site, "agent")
    page.goto(f"{site}/review/suggestions/{seeded.suggestion_id}")
    evidence = page.locator("section#evidence")
    rows = evidence.locator("table.similar tbody tr")
    assert rows.count() >= 1
    first = rows.nth(0)
    link = first.locator("a")
    assert link.inner_text() == seeded.reviewed_key
    assert link.get_attribute("href") == f"https://example.atlassian.net/browse/{seeded.reviewed_key}"
    assert "Remote Access" in first.inner_text() and "reviewed" in first.inner_text()
    first.locator("details summary").click()  # the sent reply unfolds without any script
    assert first.locator("pre.final").is_visible()

    cited = evidence.locator("ol.sources li")
    assert cited.count() == len(seeded.cited_numbers)
    article = cited.nth(0).locator("a")
    assert article.inner_text() == "VPN: 'authentication failed' in GlobalProtect"
    assert article.get_attribute("href") == "https://acme.service-now.com/kb_view.do?sysparm_article=KB0010001"
    assert "GlobalProtect" in cited.nth(0).locator("blockquote.passage").inner_text()
    assert seeded.unrelated_key not in evidence.inner_text()

    page.set_viewport_size({"width": 1100, "height": 900})
    evidence.screenshot(path=str(shot(page, "ticket-evidence").with_name("evidence.png")))
    assert page.dialogs == []
