"""State of the fake Jira: issues and comments, and an ADF flattener independent of the code under test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def adf_text(node: Any) -> str:
    """Flatten ADF to text (the fake's own copy, independent of the code under test)."""
    if isinstance(node, dict):
        if node.get("type") == "text":
            return str(node.get("text", ""))
        if node.get("type") == "hardBreak":
            return "\n"
        inner = "".join(adf_text(c) for c in node.get("content") or [])
        return inner + ("\n" if node.get("type") in ("paragraph", "heading") else "")
    return ""


@dataclass
class FakeComment:
    """A stored comment; `adf` for platform comments, `text` for JSM ones."""

    id: str
    public: bool
    via: str  # "platform" | "jsm"
    adf: dict[str, Any] | None = None
    text: str | None = None
    properties: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plain(self) -> str:
        """The comment's text whichever API created it."""
        return self.text if self.text is not None else adf_text(self.adf)


@dataclass
class FakeIssue:
    """A stored issue: the fields the connector edits, its comments and entity properties."""

    id: str
    key: str
    priority: dict[str, str] = field(default_factory=lambda: {"id": "3", "name": "Medium"})
    labels: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    comments: list[FakeComment] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)

    def internal_comments(self) -> list[FakeComment]:
        """Comments the customer cannot see."""
        return [c for c in self.comments if not c.public]

    def public_comments(self) -> list[FakeComment]:
        """Comments the customer sees."""
        return [c for c in self.comments if c.public]
