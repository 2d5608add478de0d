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
# Classes the detector gained in issue 16, each in English, German and Russian (script links and mentions are
# the same in every language); look-alike-letter variants of several of them.
PHRASE_CLASSES = {"prompt_leak", "fetch_request", "label_directive"}
MARKUP_CLASSES = {"script_link", "mention"}


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


def test_the_new_classes_are_covered_in_english_german_and_russian_and_with_look_alike_letters() -> None:
    langs: dict[str, set[str]] = defaultdict(set)
    for row in ADVERSARIAL:
        langs[row["kind"]].add(row["language"])
    assert {k: {"en", "de", "ru"} - langs[k] for k in PHRASE_CLASSES if {"en", "de", "ru"} - langs[k]} == {}
    assert {k: {"en", "de"} - langs[k] for k in MARKUP_CLASSES if {"en", "de"} - langs[k]} == {}
    look_alike = {r["kind"] for r in ADVERSARIAL if "homoglyph" in r["id"]}
    assert {"homoglyph", "prompt_leak", "label_directive"} <= look_alike


@pytest.mark.parametrize(
    "row", [r for r in ADVERSARIAL if r["kind"] in PHRASE_CLASSES | MARKUP_CLASSES], ids=lambda r: r["id"]
)
def test_a_new_class_row_raises_the_signal_of_its_class(row: dict[str, Any]) -> None:
    signals = scrub(ticket_text(row)).signals
    assert row["kind"] in signals or f"homoglyph_{row['kind']}" in signals, signals


@pytest.mark.parametrize("row", [r for r in ADVERSARIAL if r["kind"] == "label_directive"], ids=lambda r: r["id"])
def test_label_directives_are_taken_out_of_what_the_model_reads(row: dict[str, Any]) -> None:
    s = scrub(ticket_text(row))
    assert s.directives, s
    assert "[directive removed]" in s.text
    for value in s.directives.values():
        assert value not in s.text, (value, s.text)


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
