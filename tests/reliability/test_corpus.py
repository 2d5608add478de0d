"""The adversarial and benign ticket corpus (RELIABILITY bad inputs 1-12, 16 + own kinds) against scrub().

Model-free and fast: checks that the corpus is complete (every listed kind in English and German) and that the
deterministic layer flags and redacts what each row expects, with no flag on the 100 benign tickets.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from service.domain.sanitize import FLAG_INJECTION, FLAG_SECRET, FLAG_UNICODE, scrub

CORPUS = Path(__file__).parent / "corpus"
LISTED_KINDS = {
    "classic_override",
    "fake_delimiter",
    "json_smuggling",
    "markdown_exfiltration",
    "jira_markup_mentions",
    "stored_xss",
    "unicode_tricks",
    "encoded_instruction",
    "multilingual_injection",
    "split_fields",
    "indirect_email",
    "secrets_pii",
    "denial_of_wallet",
}


def load(name: str) -> list[dict[str, Any]]:
    """Rows of a corpus file."""
    with open(CORPUS / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ADVERSARIAL = load("adversarial.jsonl")
BENIGN = load("benign.jsonl")


def ticket_text(row: dict[str, Any]) -> str:
    """Everything the pipeline would put in the prompt's data block: subject, body, extra fields."""
    return "\n".join([row["subject"], row["body"], *[str(v) for v in row.get("fields", {}).values()]])


def test_every_listed_kind_is_covered_in_english_and_german() -> None:
    langs: dict[str, set[str]] = defaultdict(set)
    for row in ADVERSARIAL:
        langs[row["kind"]].add(row["language"])
    missing = {k: {"en", "de"} - langs.get(k, set()) for k in LISTED_KINDS}
    assert {k: v for k, v in missing.items() if v} == {}
    assert len({r["id"] for r in ADVERSARIAL + BENIGN}) == len(ADVERSARIAL) + len(BENIGN)
    assert len(BENIGN) == 100 and {r["language"] for r in BENIGN} == {"en", "de"}


@pytest.mark.parametrize("row", ADVERSARIAL, ids=[r["id"] for r in ADVERSARIAL])
def test_adversarial_row_is_flagged_and_redacted_as_expected(row: dict[str, Any]) -> None:
    s = scrub(ticket_text(row))
    expect = row["expect"]
    if expect["injection_flag"]:
        assert FLAG_INJECTION in s.flags, s.signals
    if expect["secret_flag"]:
        assert FLAG_SECRET in s.flags
        for canary in expect["forbidden"]:
            assert canary not in s.text
    if expect["unicode_flag"]:
        assert FLAG_UNICODE in s.flags
        assert not any(0xE0000 <= ord(c) <= 0xE007F or c in "\u200b\u200d\u202e\u2060" for c in s.text)


def test_benign_corpus_raises_no_flag() -> None:
    """False-positive rate of the deterministic layer on 100 benign tickets (target and measured: 0)."""
    flagged = {r["id"]: scrub(ticket_text(r)).flags for r in BENIGN}
    assert {k: v for k, v in flagged.items() if v} == {}
