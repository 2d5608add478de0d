"""Turn Jira wiki markup and Atlassian Document Format into plain text for the model and the review UI."""

from __future__ import annotations

import re
from typing import Any

# Wiki markup constructs, most specific first. Links keep their label and URL as text; images and macros vanish.
_CODE_BLOCK = re.compile(r"\{(code|noformat)(?::[^}]*)?\}(.*?)\{\1\}", re.S)
_MACRO = re.compile(r"\{(?:color|panel|quote|html)(?::[^}]*)?\}", re.I)
_IMAGE = re.compile(r"!([^!\s|][^!\n]*?)(?:\|[^!\n]*)?!")
_LINK = re.compile(r"\[([^\]|\n]+)\|([^\]\n]+)\]")
_MENTION = re.compile(r"\[~(?:accountid:)?([^\]\n]+)\]")
_BARE_LINK = re.compile(r"\[(https?://[^\]\s]+)\]")
_HEADING = re.compile(r"^h[1-6]\.\s*", re.M)
_BULLET = re.compile(r"^([*#]+)\s+", re.M)
_EMPHASIS = re.compile(r"(?<![\w*])([*_+^~-])(\S(?:.*?\S)?)\1(?![\w*])")
_TABLE_SEP = re.compile(r"\|\|?")
_BLANKS = re.compile(r"\n{3,}")


def wiki_to_text(markup: str) -> str:
    """Plain text of a Jira wiki-markup string (webhook payloads carry v2 wiki markup, not ADF)."""
    text = markup.replace("\r\n", "\n").replace("\r", "\n")
    text = _CODE_BLOCK.sub(lambda m: m.group(2).strip("\n"), text)
    text = _MACRO.sub("", text)
    text = _IMAGE.sub("", text)
    text = _MENTION.sub(lambda m: "@" + m.group(1).split(":")[-1][:8], text)
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    text = _BARE_LINK.sub(r"\1", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub(lambda m: "- " if m.group(1)[0] == "*" else "1. ", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = "\n".join(_TABLE_SEP.sub(" | ", line).strip(" |") if "|" in line else line for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


_BLOCK_NODES = {"paragraph", "heading", "blockquote", "codeBlock", "listItem", "rule", "panel", "tableRow"}


def adf_to_text(node: Any) -> str:
    """Plain text of an ADF document: text, mentions (as @name), hard breaks and block separators."""
    parts: list[str] = []
    _walk_adf(node, parts, depth=0)
    return _BLANKS.sub("\n\n", "".join(parts)).strip()


def _walk_adf(node: Any, out: list[str], *, depth: int) -> None:
    """Depth-bounded walk: a hostile, deeply nested document cannot exhaust the stack."""
    if depth > 64 or not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "text" and isinstance(node.get("text"), str):
        out.append(node["text"])
        return
    if kind == "hardBreak":
        out.append("\n")
        return
    if kind == "mention":
        attrs = node.get("attrs")
        out.append(str(attrs.get("text") or "@user") if isinstance(attrs, dict) else "@user")
        return
    if kind == "listItem":
        out.append("- ")
    content = node.get("content")
    if isinstance(content, list):
        for child in content:
            _walk_adf(child, out, depth=depth + 1)
    if kind in _BLOCK_NODES:
        out.append("\n\n" if kind in {"paragraph", "heading", "codeBlock", "blockquote", "panel"} else "\n")


def to_text(value: Any) -> str:
    """Plain text of a description/comment that may be wiki markup (str), ADF (dict) or absent."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return adf_to_text(value)
    if isinstance(value, str):
        return wiki_to_text(value)
    return str(value)
