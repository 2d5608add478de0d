"""Issue 16 item 2: every link, address, phone number and code block of a draft is backed by the ticket or the
draft's source, or it is removed and the draft flagged (the review UI shows the flag next to the draft)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.domain.grounding import FLAG_CODE, FLAG_EMAIL, FLAG_LINK, FLAG_PHONE, MARKS, check_draft

TICKET = (
    "VPN fails since 9:00. The portal https://portal.example.com/vpn/help did not help.\n"
    "Reach me at dana@example.com or +49 30 1234567. I ran `ipconfig /flushdns` already."
)
PAST_REPLY = "Please reinstall the client from https://downloads.example.com/vpn and call 0800 555 0100."


@pytest.mark.parametrize(
    ("draft", "flag", "gone"),
    [
        ("Please mail support@helpdesk-evil.example for a reset.", FLAG_EMAIL, "support@helpdesk-evil.example"),
        ("Write to [us](mailto:it-admin@corp.example).", FLAG_EMAIL, "it-admin@corp.example"),
        ("See https://portal.example.com/vpn/help/../admin for details.", FLAG_LINK, "/admin"),
        ("Your reset link: https://…", FLAG_LINK, "https://"),
        ("Use https://portal.example.com/vp… as before.", FLAG_LINK, "portal.example.com/vp"),
        ("Click [here](javascript:fetch('//x.example'))", FLAG_LINK, "javascript:"),
        ("Visit www.totally-legit.example to continue.", FLAG_LINK, "www.totally-legit.example"),
        ("Call our hotline on +1 (415) 555-0199 now.", FLAG_PHONE, "555-0199"),
        ("Run this:\n```python\nimport requests\nrequests.delete('https://api.example/users')\n```", FLAG_CODE,
         "requests.delete"),
        ("Then run `rm -rf ~/.config/vpn` and retry.", FLAG_CODE, "rm -rf"),
        ("{code}Remove-Item C:\\ProgramData\\VPN -Recurse{code}", FLAG_CODE, "Remove-Item"),
    ],
)  # fmt: skip
def test_an_unbacked_item_is_removed_and_flagged(draft: str, flag: str, gone: str) -> None:
    g = check_draft(draft, ticket_text=TICKET, sources=[PAST_REPLY])
    assert flag in g.flags and gone not in g.text and MARKS[flag] in g.text
    assert check_draft(g.text, ticket_text=TICKET, sources=[PAST_REPLY]).flags == []  # idempotent


def test_items_from_the_ticket_or_the_source_stay() -> None:
    draft = (
        "Hello Dana, thanks for writing from dana@example.com (+49 30 1234567).\n"
        "Since `ipconfig /flushdns` and https://portal.example.com/vpn/help did not help, please reinstall from\n"
        "https://downloads.example.com/vpn/ and call 0800 555 0100. Ticket opened 2026-07-14 09:20, v6.2.1."
    )
    g = check_draft(draft, ticket_text=TICKET, sources=[PAST_REPLY])
    assert g.flags == [] and g.text == draft


def test_real_agent_replies_are_unchanged_when_checked_against_themselves() -> None:
    """A draft from the ticket memory is backed by the past reply it copies: nothing of it may be removed."""
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tickets" / "train.jsonl"
    if not data.exists():
        pytest.skip("shared ticket data absent")
    replies = [r["reply"] for r in map(json.loads, data.read_text(encoding="utf-8").splitlines()) if r["reply"]]
    assert len(replies) > 4000
    changed = [r for r in replies if check_draft(r, ticket_text="", sources=[r]).text != r]
    assert changed == []
