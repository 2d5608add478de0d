"""Turn untrusted model output into inert plain text for Jira ADF, JSM wiki text and ServiceNow journals.

Model output is data, never markup: whatever it contains must not become a mention, macro, image, HTML or a
link that was not already in the ticket. Every renderer first runs `sanitize_text`, then encodes for its
target.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_TEXT_CHARS = 8000  # well under Jira's 32 767-char comment limit and ServiceNow's journal limits
TRUNCATION_NOTE = " ... (truncated)"
MARKER_PREFIX = "itsm-ref:"

# Schemes that turn into clickable links or script when a renderer auto-links them.
_URL_RE = re.compile(r"\b(?:https?|ftp|file|javascript|data|vbscript|mailto|tel|sms):[^\s<>\"'\]\[|)}]*", re.I)
_BLANK_RUN_RE = re.compile(r"\n{3,}")
# Jira wiki characters that open links/mentions ([ ]), macros ({ }), images (!), tables (|) or effects (~ ^).
_WIKI_SPECIALS = re.compile(r"([\[\]{}!|~^*_+?#-])")
# Line starts that Jira wiki turns into headings, quotes or lists.
_WIKI_LINE_START = re.compile(r"^(\s*)(h[1-6]\.|bq\.)", re.I)
# ServiceNow renders journal text between [code] tags as raw HTML.
_SN_CODE_TAG = re.compile(r"\[(/?\s*code\s*)\]", re.I)
_HTML_TAG_START = re.compile(r"<(?=[a-zA-Z/!?])")


def marker_token(idempotency_key: str, part: str = "") -> str:
    """A short, deterministic, non-revealing token identifying one write (its idempotency key and part)."""
    digest = hashlib.sha256(f"{idempotency_key}|{part}".encode()).hexdigest()[:20]
    return f"{MARKER_PREFIX}{digest}"


def _strip_invisible(text: str) -> str:
    """Drop control and format characters (zero-width, bidi overrides, Unicode tag 'ASCII smuggling')."""
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        out.append(ch)
    return "".join(out)


def _defang_url(match: re.Match[str], allowed: frozenset[str]) -> str:
    """Keep a link only if it appeared in the ticket; otherwise break its scheme so nothing auto-links it."""
    url = match.group(0)
    if url.rstrip(".,;:") in allowed:
        return url
    scheme, _, rest = url.partition(":")
    return f"{scheme}[:]{rest}"


def sanitize_text(text: str, *, max_chars: int = MAX_TEXT_CHARS, allowed_links: Iterable[str] = ()) -> str:
    """Normalise, strip invisible characters, defang links not in `allowed_links`, and bound the length."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _strip_invisible(text).replace("\t", "    ")
    allowed = frozenset(allowed_links)
    text = _URL_RE.sub(lambda m: _defang_url(m, allowed), text)
    text = _BLANK_RUN_RE.sub("\n\n", text).strip()
    if len(text) > max_chars:
        text = text[: max(0, max_chars - len(TRUNCATION_NOTE))].rstrip() + TRUNCATION_NOTE
    return text


def links_in(text: str) -> list[str]:
    """The http(s) links a ticket itself contains: the only ones model output may keep clickable."""
    found = (m.group(0).rstrip(".,;:") for m in _URL_RE.finditer(text))
    return sorted({url for url in found if url.lower().startswith(("https://", "http://"))})[:50]


def _paragraph(lines: list[str]) -> dict[str, Any]:
    """One ADF paragraph of text nodes joined by hard breaks (no marks, no inline cards)."""
    content: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if i:
            content.append({"type": "hardBreak"})
        if line:
            content.append({"type": "text", "text": line})
    return {"type": "paragraph", "content": content}


def to_adf(
    text: str,
    *,
    heading: str | None = None,
    footer: str | None = None,
    max_chars: int = MAX_TEXT_CHARS,
    allowed_links: Iterable[str] = (),
) -> dict[str, Any]:
    """Build an ADF document from text nodes only: paragraphs, hard breaks and an optional heading."""
    body = sanitize_text(text, max_chars=max_chars, allowed_links=allowed_links)
    content: list[dict[str, Any]] = []
    if heading:
        content.append(
            {
                "type": "heading",
                "attrs": {"level": 3},
                "content": [{"type": "text", "text": sanitize_text(heading)}],
            }
        )
    for block in body.split("\n\n"):
        if block.strip():
            content.append(_paragraph(block.split("\n")))
    if footer:
        content.append(_paragraph([sanitize_text(footer)]))
    if not content:
        content.append({"type": "paragraph", "content": []})
    return {"type": "doc", "version": 1, "content": content}


def adf_plain_text(doc: object) -> str:
    """Flatten an ADF document (as returned by Jira) to its text, for marker lookup."""
    parts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "text" and isinstance(node.get("text"), str):
                parts.append(node["text"])
            elif node.get("type") == "hardBreak":
                parts.append("\n")
            for child in node.get("content", []) or []:
                walk(child)
            if node.get("type") in ("paragraph", "heading"):
                parts.append("\n")
        elif isinstance(node, str):
            parts.append(node)

    walk(doc)
    return "".join(parts)


def to_jira_wiki_text(
    text: str,
    *,
    heading: str | None = None,
    footer: str | None = None,
    max_chars: int = MAX_TEXT_CHARS,
    allowed_links: Iterable[str] = (),
) -> str:
    """Plain text for JSM servicedeskapi bodies (rendered as wiki markup): every markup trigger is escaped."""
    body = sanitize_text(text, max_chars=max_chars, allowed_links=allowed_links)
    # Backslash is wiki's escape and line-break character: replace it so it cannot un-escape what follows.
    body = body.replace("\\", "/")
    lines = []
    for line in body.split("\n"):
        line = _WIKI_LINE_START.sub(lambda m: m.group(1) + "(" + m.group(2) + ")", line)
        lines.append(_WIKI_SPECIALS.sub(r"\\\1", line))
    out = "\n".join(lines)
    if len(out) > max_chars:  # escaping can grow the text: bound it again, never ending on a lone backslash
        out = out[: max(0, max_chars - len(TRUNCATION_NOTE))]
        trailing = len(out) - len(out.rstrip("\\"))
        out = (out[:-1] if trailing % 2 else out) + TRUNCATION_NOTE
    if heading:
        out = _WIKI_SPECIALS.sub(r"\\\1", sanitize_text(heading).replace("\\", "/")) + "\n\n" + out
    if footer:
        out = out + "\n\n" + sanitize_text(footer)  # our own marker: alphanumerics, ':' and '-' only
    return out


def to_servicenow_journal(
    text: str,
    *,
    heading: str | None = None,
    footer: str | None = None,
    max_chars: int = MAX_TEXT_CHARS,
    allowed_links: Iterable[str] = (),
) -> str:
    """Plain text for a ServiceNow journal entry: [code] tags (raw HTML) and tag openers are neutralised."""
    body = sanitize_text(text, max_chars=max_chars, allowed_links=allowed_links)
    body = _SN_CODE_TAG.sub(lambda m: "(" + m.group(1) + ")", body)
    body = _HTML_TAG_START.sub("< ", body)
    parts = [sanitize_text(heading)] if heading else []
    parts.append(body)
    if footer:
        parts.append(sanitize_text(footer))
    return "\n\n".join(p for p in parts if p)


def note_with_unmapped(note: str | None, unmapped: dict[str, str]) -> str | None:
    """Mention labels that have no mapping in the internal note: suggested to the agent, never written."""
    if not unmapped:
        return note
    lines = [f"Suggested, not applied (no mapping configured): {k} = {v}" for k, v in sorted(unmapped.items())]
    return "\n".join([note, "", *lines]) if note else "\n".join(lines)
