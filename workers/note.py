"""The internal triage note: plain text listing what was applied and what is suggested (not shadow)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from service.domain.policy import Decision, FieldDecision

if TYPE_CHECKING:
    from service.knowledge.similar import SimilarTicket

NOTE_MAX_CHARS = 4000


def build_note(
    decisions: Mapping[str, FieldDecision],
    *,
    draft_pending: bool,
    flags: list[str],
    model_version: str,
    adapter_version: str | None,
    similar: Sequence[SimilarTicket] = (),
) -> str:
    """Plain text for agents; the connector renders it inertly, this only decides what it says."""
    applied = [d for d in decisions.values() if d.decision == Decision.auto]
    suggested = [d for d in decisions.values() if d.decision == Decision.suggest]
    lines: list[str] = []  # the connector adds the "internal, AI triage" heading for its system
    if applied:
        lines.append("Applied automatically:")
        lines += [f"- {d.field}: {d.label} ({d.confidence:.0%})" for d in applied]
    if suggested:
        lines.append("Suggested (not applied):")
        lines += [f"- {d.field}: {d.label} ({d.confidence:.0%}; {d.reason})" for d in suggested]
    if not applied and not suggested:
        lines.append("No field suggestions.")
    if draft_pending:  # drafted after the labels (workers/drafts.py); no second note is written for it
        lines += ["", "A draft reply is being prepared and will be waiting for review in the review UI."]
    if similar:  # keys and links only: another customer's text never goes into this ticket's note
        from service.knowledge.similar import note_lines

        lines += ["", *note_lines(similar)]
    visible_flags = [f for f in flags if not f.startswith("language:")]
    if visible_flags:
        lines += ["", "Flags: " + ", ".join(sorted(set(visible_flags)))]
    version = model_version + (f" + {adapter_version}" if adapter_version else "")
    lines += ["", f"Model: {version}"]
    text = "\n".join(lines)
    return text if len(text) <= NOTE_MAX_CHARS else text[: NOTE_MAX_CHARS - 15] + "\n[... truncated]"
