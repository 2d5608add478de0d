"""The internal triage note: plain text listing what was applied and what is suggested (not shadow)."""

from __future__ import annotations

from collections.abc import Mapping

from service.domain.policy import Decision, FieldDecision

NOTE_MAX_CHARS = 4000


def build_note(
    decisions: Mapping[str, FieldDecision],
    *,
    suggestion_id: int | None,
    flags: list[str],
    model_version: str,
    adapter_version: str | None,
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
    if suggestion_id is not None:
        lines += ["", f"A draft reply is waiting for review (suggestion {suggestion_id})."]
    visible_flags = [f for f in flags if not f.startswith("language:")]
    if visible_flags:
        lines += ["", "Flags: " + ", ".join(sorted(set(visible_flags)))]
    version = model_version + (f" + {adapter_version}" if adapter_version else "")
    lines += ["", f"Model: {version}"]
    text = "\n".join(lines)
    return text if len(text) <= NOTE_MAX_CHARS else text[: NOTE_MAX_CHARS - 15] + "\n[... truncated]"
