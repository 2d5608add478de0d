"""Drafts say only what they can back: links, addresses, phone numbers and code checked against their sources.

A draft (drafted by the model, or a past reply from the ticket memory) is shown to an agent who may approve it in
a hurry. Every URL, e-mail address, phone number and code block in it must appear in the ticket itself or in the
source the draft came from (the past reply it copies, the knowledge-base passage it cites); anything else is
removed and replaced by a visible marker, and the result carries one flag per kind (`unsupported_link`, ...)
that the review UI shows next to the draft. `javascript:`/`data:` links are never backed, and a link cut short
(`https://…`) is not the link it was cut from. Pure stdlib: part of the domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FLAG_LINK = "unsupported_link"
FLAG_EMAIL = "unsupported_email"
FLAG_PHONE = "unsupported_phone"
FLAG_CODE = "unsupported_code"
FLAGS = (FLAG_LINK, FLAG_EMAIL, FLAG_PHONE, FLAG_CODE)
MARKS = {
    FLAG_LINK: "[link removed: not in the ticket or its sources]",
    FLAG_EMAIL: "[address removed: not in the ticket or its sources]",
    FLAG_PHONE: "[number removed: not in the ticket or its sources]",
    FLAG_CODE: "[code removed: not in the ticket or its sources]",
}

# Code first (a block may hold links that go with it), then links, addresses, phone numbers.
_CODE = re.compile(
    r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|\{(code|noformat)(?::[^}]*)?\}.*?(?:\{\1\}|\Z)"
    r"|<(pre|code)\b[^>]*>.*?(?:</\2\s*>|\Z)|`[^`\n]{1,200}`",
    re.S | re.I,
)
_ELLIPSIS = "(?:…|\\.\\.\\.)"
_LINK = re.compile(
    r"(?i)(?:\b(?:https?|ftp|file|sftp|smb)://|\bwww\.)[^\s<>\"'`\[\]{}|\\^…]*(?P<cut>" + _ELLIPSIS + r")?"
    r"|(?<![\w-])(?:javascript|vbscript|data|livescript)\s*:[^\s<>\"'`]*"
)
_EMAIL = re.compile(r"(?i)(?:\bmailto:)?(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+\b")
_PHONE = re.compile(r"(?:\btel:|(?<![\w/.:-]))(?:\+|00)?\d[\d ()/.-]{5,22}\d(?![\w/-])")
_DATE = re.compile(r"^\d{1,4}([./-])\d{1,2}\1\d{1,4}$|^\d{4}-\d{2}-\d{2}")
_TRAILING = ".,;:!?)]}'\""
_NEVER_BACKED = re.compile(r"(?i)^(?:javascript|vbscript|data|livescript)\s*:")


@dataclass(frozen=True)
class GroundedDraft:
    """The draft with unsupported items replaced, the flags it earned, and how many of each kind went."""

    text: str
    flags: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)


def _norm_link(url: str) -> str:
    """Compare links case-insensitively in scheme and host, without trailing punctuation or slash."""
    url = url.rstrip(_TRAILING).rstrip("/")
    m = re.match(r"(?i)^([a-z][a-z0-9+.-]*://)?([^/?#]*)(.*)$", url)
    if not m:
        return url
    scheme = (m.group(1) or "").lower()
    return scheme + m.group(2).lower() + m.group(3)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _phone_like(candidate: str) -> bool:
    """A phone number, not a date, a version, an amount or an id: 7-15 digits, separated or with a + prefix."""
    raw = candidate.removeprefix("tel:").strip()
    digits = _digits(raw)
    if not 7 <= len(digits) <= 15 or _DATE.match(raw):
        return False
    if raw.count(".") > 0 and not raw.startswith("+"):
        return False  # 10.0.0.1, 1.2.3.4567 are addresses and versions
    return raw.startswith(("+", "00", "(")) or bool(re.search(r"\d[ /-]\d", raw)) or len(digits) >= 9


def _squash(text: str) -> str:
    """Code compared without markup fences and whitespace differences."""
    text = re.sub(r"(?is)^```[\w+-]*|```$|^~~~|~~~$|^\{(?:code|noformat)(?::[^}]*)?\}|\{(?:code|noformat)\}$", "", text)
    text = re.sub(r"(?is)^<(?:pre|code)\b[^>]*>|</(?:pre|code)\s*>$|^`|`$", "", text.strip())
    return " ".join(text.split())


@dataclass
class _Support:
    """What the ticket and the sources contain, in the forms drafts are compared in."""

    links: set[str]
    emails: set[str]
    phones: set[str]
    text: str  # whitespace-squashed, for code

    @classmethod
    def of(cls, texts: Iterable[str]) -> _Support:
        joined = "\n".join(t for t in texts if t)
        links = {_norm_link(m.group(0)) for m in _LINK.finditer(joined) if not m.group("cut")}
        emails = {m.group(0).lower().removeprefix("mailto:") for m in _EMAIL.finditer(joined)}
        phones = {_digits(m.group(0)) for m in _PHONE.finditer(joined) if _phone_like(m.group(0))}
        return cls(links, emails, phones, " ".join(joined.split()))


def check_draft(draft: str, *, ticket_text: str, sources: Sequence[str] = ()) -> GroundedDraft:
    """Remove (and flag) every link, address, phone number and code block the ticket and sources do not back.

    `ticket_text` is the ticket as stored (subject and body); `sources` are the texts the draft came from: the
    past reply of the ticket memory it reuses, the example reply a generated draft was shown, knowledge-base
    passages. Idempotent: the markers contain nothing that is checked again.
    """
    support = _Support.of([ticket_text, *sources])
    removed: dict[str, int] = {}

    def mark(kind: str) -> str:
        removed[kind] = removed.get(kind, 0) + 1
        return MARKS[kind]

    def code(m: re.Match[str]) -> str:
        body = _squash(m.group(0))
        return m.group(0) if body and body in support.text else mark(FLAG_CODE)

    def link(m: re.Match[str]) -> str:
        url, cut = m.group(0), bool(m.group("cut"))
        core = url if cut else url.rstrip(_TRAILING)
        tail = url[len(core) :]
        if cut or _NEVER_BACKED.match(core) or _norm_link(core) not in support.links:
            return mark(FLAG_LINK) + tail
        return url

    def email(m: re.Match[str]) -> str:
        addr = m.group(0).lower().removeprefix("mailto:")
        return m.group(0) if addr in support.emails else mark(FLAG_EMAIL)

    def phone(m: re.Match[str]) -> str:
        if not _phone_like(m.group(0)) or _digits(m.group(0)) in support.phones:
            return m.group(0)
        return mark(FLAG_PHONE)

    text = _CODE.sub(code, draft)
    text = _LINK.sub(link, text)
    text = _EMAIL.sub(email, text)
    text = _PHONE.sub(phone, text)
    flags = [kind for kind in FLAGS if removed.get(kind)]
    return GroundedDraft(text=text, flags=flags, removed=removed)
