"""Scrub untrusted ticket text before it reaches the prompt, stored drafts or logs.

Three passes, in this order: (a) Unicode normalisation that removes invisible carriers of hidden instructions
(tag characters, zero-width and bidi controls), (b) redaction of secrets and PII with typed placeholders, and
(c) detection of likely prompt injection, which flags (the gates outside the model do the blocking) and takes
label-like directives out of what the model reads (service.domain.directives has the classes beyond overrides).
Pure stdlib + pydantic: the domain stays importable everywhere.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from service.domain.directives import TO_LATIN, directive_signals, neutralise, views

FLAG_UNICODE = "unicode_stripped"
FLAG_SECRET = "contains_secret"  # the ticket is flagged "contains secret, rotate"
FLAG_INJECTION = "possible_injection"
PLACEHOLDER = "[REDACTED:{kind}]"
_PLACEHOLDER_SEEN = re.compile(r"\[REDACTED:[a-z_]{2,20}\]")

_MAX_EXPANSION = 4  # a character whose NFKD form is longer (e.g. U+FDFA, 18 chars) would bloat the prompt
_MAX_DECODE_CANDIDATES = 50  # bounds the base64 probe on hostile input
_MAX_DECODE_LEN = 4096


class Scrubbed(BaseModel):
    """Scrubbed text plus what was done to it (flags for the ticket, details for the audit log)."""

    model_config = ConfigDict(frozen=True)

    text: str
    flags: list[str] = Field(default_factory=list)
    redactions: dict[str, int] = Field(default_factory=dict, description="placeholder kind -> count")
    signals: list[str] = Field(default_factory=list, description="why the injection flag was raised")
    directives: dict[str, str] = Field(
        default_factory=dict, description="field -> value the text demanded (taken out of `text`)"
    )


# --- (a) Unicode -------------------------------------------------------------------------------------------

_INVISIBLE_EXTRA = frozenset(
    {0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800}  # grapheme joiner, Hangul fillers, braille blank
)


def _is_invisible(cp: int, cat: str) -> bool:
    """Characters that render as nothing yet reach the model: controls, format, tags, selectors, fillers."""
    if cat in ("Cf", "Cs") or (cat == "Cc" and cp not in (0x09, 0x0A)):
        return True
    if 0xE0000 <= cp <= 0xE0FFF:  # tag block and variation selectors supplement (incl. unassigned)
        return True
    return cp in _INVISIBLE_EXTRA


def _strip(text: str) -> tuple[str, int, str]:
    """Drop invisible characters; returns (text, flag-worthy removals, hidden ASCII from tag chars)."""
    out: list[str] = []
    hidden: list[str] = []
    removed = 0
    for ch in text:
        cp = ord(ch)
        if 0xFE00 <= cp <= 0xFE0F:  # emoji presentation selectors: dropped, flagged only when used in bulk
            removed += 0 if ch == "\ufe0f" else 1
            continue
        if _is_invisible(cp, unicodedata.category(ch)):
            if 0xE0020 <= cp <= 0xE007E:
                hidden.append(chr(cp - 0xE0000))  # "ASCII smuggling": keep what it said, for the detector
            removed += 1
            continue
        if unicodedata.decomposition(ch) and len(unicodedata.normalize("NFKD", ch)) > _MAX_EXPANSION:
            out.append("\ufffd")
            removed += 1
            continue
        out.append(ch)
    return "".join(out), removed, "".join(hidden)


def normalize_unicode(text: str) -> tuple[str, bool, str]:
    """NFKC plus stripping of invisibles until stable; returns (text, stripped?, hidden tag text)."""
    text = re.sub(r"\r\n?|[\u2028\u2029\x85]", "\n", text)
    total = 0
    hidden = ""
    for _ in range(4):  # strip can re-enable composition and NFKC can expose a control: loop to a fixpoint
        text, removed, found = _strip(text)
        total += removed
        hidden += found
        normal = unicodedata.normalize("NFKC", text)
        if normal == text:
            break
        text = normal
    return text, total > 0, hidden


# --- (b) secrets and PII ---------------------------------------------------------------------------------

# The dashes are optional and may be any dash: Jira's wiki renderer turns "-----" into "--" before we see the text.
_PRIVATE_KEY = re.compile(
    r"[-–—]*[ \t]*BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?[ \t]*[-–—]*"
    r"(?:.*?END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?[ \t]*[-–—]*|[A-Za-z0-9+/=:,.\- \t\n]*)",
    re.S,
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}\b")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_KNOWN_TOKENS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|glpat-[A-Za-z0-9_-]{20,})"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/-]{16,}=*)")
_URL_CREDS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@\[]+):([^\s/@\[]+)@")
_KEYWORDS = (
    r"passwor[dt]|passwd|pwd|pass|kennwort|contrase(?:ñ|n)a|clave|mot de passe|密码|口令"
    r"|secret|client[_ -]?secret|token|api[_ -]?key|apikey|access[_ -]?key|private[_ -]?key"
    r"|psk|pre-?shared[_ -]?key|passphrase|pin"
)
_KV_SECRET = re.compile(rf"(?i)(?<![A-Za-z])((?:{_KEYWORDS})[\"']?\s*(?:[:=：]|=>)\s*[\"']?)([^\s\"',;]+)")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_SSN_KEYWORD = re.compile(r"(?i)\b(ssn|social security(?: number| no\.?)?)(\W{1,3})(\d{9})(?!\d)")
_DIGIT_CHAIN = re.compile(r"\d+(?:[ -]\d+)*")
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")
_NOT_A_SECRET = frozenset(
    {"reset", "expired", "forgotten", "forgot", "changed", "change", "required", "needed", "locked"}
    | {"abgelaufen", "vergessen", "gesperrt", "zurücksetzen"}
)
# IBAN lengths per country (ISO 13616 registry); only registered countries are checked.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _mixed_case_and_digits(s: str) -> bool:
    """Shape of a random key: upper, lower and digits all present (git SHAs are lowercase hex)."""
    return any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string (payment card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_brand_ok(digits: str) -> bool:
    """Issuer prefix and length of the card schemes in use, to keep order numbers and phone numbers out."""
    n = len(digits)
    if digits[0] == "4":
        return n in (13, 16, 19)
    if digits[:2] in ("34", "37"):
        return n == 15
    if "51" <= digits[:2] <= "55" or "2221" <= digits[:4] <= "2720":
        return n == 16
    if digits[:2] in ("30", "35", "36", "38", "62", "65") or digits[:4] == "6011" or digits[:2] == "64":
        return 14 <= n <= 19
    return False


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: registered country length and mod-97 == 1."""
    iban = candidate.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _find_cards(text: str) -> list[tuple[int, int]]:
    """Spans of Luhn-valid card numbers: 13-19 digits aligned on the digit groups of a chain like 4111 1111 ...

    Every group-aligned window of at most 19 digits is tried (longest first), so an invalid prefix (an SSN or order
    number before the card) does not hide the card, nothing inside a longer digit run is ever cut out, and a
    hostile chain of thousands of groups costs linear time.
    """
    spans: list[tuple[int, int]] = []
    for chain in _DIGIT_CHAIN.finditer(text):
        chain_text = chain.group(0)
        groups = [(m.start(), m.end()) for m in re.finditer(r"\d+", chain_text)]
        digit_groups = [chain_text[a:b] for a, b in groups]
        base, i = chain.start(), 0
        while i < len(groups):
            if digit_groups[i][0] not in "23456":  # no card scheme starts otherwise: skip cheaply
                i += 1
                continue
            ends: list[int] = []
            n = 0
            for j in range(i, len(groups)):
                n += len(digit_groups[j])
                if n > 19:
                    break
                if n >= 13:
                    ends.append(j)
            for j in reversed(ends):
                digits = "".join(digit_groups[i : j + 1])
                if _card_brand_ok(digits) and luhn_valid(digits):
                    spans.append((base + groups[i][0], base + groups[j][1]))
                    i = j
                    break
            i += 1
    return spans


def _find_ibans(text: str) -> list[tuple[int, int]]:
    """Spans of checksum-valid IBANs, written compact or in groups separated by single spaces."""
    spans: list[tuple[int, int]] = []
    for m in _IBAN_START.finditer(text):
        want = _IBAN_LENGTHS.get(m.group(1).upper())
        if not want or (spans and m.start() < spans[-1][1]):
            continue
        got, i = 4, m.end()
        while got < want and i < len(text):
            if text[i].isascii() and text[i].isalnum():
                got, i = got + 1, i + 1
            elif text[i] == " " and i + 1 < len(text) and text[i + 1].isascii() and text[i + 1].isalnum():
                i += 1
            else:
                break
        if got == want and not (i < len(text) and text[i].isascii() and text[i].isalnum()):
            if iban_valid(text[m.start() : i]):
                spans.append((m.start(), i))
    return spans


class _Redactor:
    """Applies the recognisers in order, counts what each replaced and keeps the replaced values (for payloads)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.counts: dict[str, int] = {}
        self.found: list[str] = []

    def _mark(self, kind: str, value: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.found.append(value)
        return PLACEHOLDER.format(kind=kind)

    def sub(
        self, pattern: re.Pattern[str], kind: str, *, group: int = 0, valid: Callable[[str], bool] | None = None
    ) -> None:
        """Replace `group` of every match (the rest of the match stays), optionally only values that pass `valid`."""

        def repl(m: re.Match[str]) -> str:
            value = m.group(group)
            if valid is not None and not valid(value):
                return m.group(0)
            whole, at = m.group(0), m.start()
            return whole[: m.start(group) - at] + self._mark(kind, value) + whole[m.end(group) - at :]

        self.text = pattern.sub(repl, self.text)

    def sub_kv(self) -> None:
        """`password: value` style pairs: only values that look like a secret (not 'password: reset')."""

        def repl(m: re.Match[str]) -> str:
            value = m.group(2)
            looks_secret = any(c.isdigit() or not c.isalnum() for c in value) or len(value) >= 12
            if value.startswith("[REDACTED") or len(value) < 4 or not looks_secret:
                return m.group(0)
            if value.lower().strip(".!") in _NOT_A_SECRET:
                return m.group(0)
            return m.group(1) + self._mark("password", value)

        self.text = _KV_SECRET.sub(repl, self.text)

    def spans(self, spans: list[tuple[int, int]], kind: str) -> None:
        """Replace precomputed spans (right to left so earlier offsets stay valid)."""
        for start, end in reversed(spans):
            self.text = self.text[:start] + self._mark(kind, self.text[start:end]) + self.text[end:]


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace secrets and PII with `[REDACTED:<kind>]`; returns the text and counts per kind."""
    r = _redactor(text)
    return r.text, r.counts


def redact_values(text: str) -> tuple[str, dict[str, int], list[str]]:
    """`redact`, plus the values it replaced (to find the same secrets elsewhere, e.g. in a raw payload)."""
    r = _redactor(text)
    return r.text, r.counts, r.found


def _redactor(text: str) -> _Redactor:
    r = _Redactor(text)
    r.sub(_PRIVATE_KEY, "private_key")
    r.sub(_JWT, "jwt")
    r.sub(_KNOWN_TOKENS, "token")
    r.sub(_AWS_KEY, "aws_access_key")
    # A lone 40-char token mixing cases and digits is an AWS-style secret whether or not "aws" is nearby.
    r.sub(_AWS_SECRET, "aws_secret", valid=_mixed_case_and_digits)
    r.sub(_BEARER, "token", group=2)
    r.sub(_URL_CREDS, "password", group=2)
    r.sub_kv()
    r.spans(_find_ibans(r.text), "iban")
    r.spans(_find_cards(r.text), "card")
    r.sub(_SSN, "ssn")
    r.sub(_SSN_KEYWORD, "ssn", group=3)
    return r


# --- (c) prompt injection --------------------------------------------------------------------------------

_OVERRIDE = re.compile(
    r"(?i)"
    # English
    r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|every|the|your|of|my|these|those)\s+)*"
    r"(?:(?:previous|prior|above|earlier|preceding|system|original|former)\s+)?"
    r"(?:instructions?|prompts?|rules|directions|guidelines|directives)\b"
    r"|\byou\s+are\s+now\s+(?:a|an|dan|my|acting|operating|in\s+\w+\s+mode)\b|\bnew\s+(?:system\s+)?(?:instructions?|policy|rules)\s*[:!]"
    r"|\b(?:reveal|print|show|output|repeat)\b.{0,20}\bsystem\s+prompt|\bdeveloper\s+mode\b|\bjailbreak"
    r"|\b(?:ai|assistant|chatbot|llm|model|bot|gpt)\s*(?:assistant)?\s*[:,]\s*(?:please\s+)?(?:close|set|send|mark"
    r"|assign|change|reply|forward|delete|escalate|ignore)\b"
    r"|\bset\s+(?:the\s+)?priority\s+to\s+(?:p?1|critical|highest|urgent)\b|\bauto[-_ ]?send\b"
    r"|\bdecode\s+(?:this|and|the\s+following)\b.{0,20}\b(?:follow|execute|obey|run)"
    # German
    r"|\b(?:ignorier|vergiss|missachte|übergeh)\w*\s+(?:(?:sie|du|alle|alles|deine|die|der|bisherigen|vorherigen"
    r"|obigen|vorangegangenen|früheren|vorigen|system)\s+)*(?:anweisungen|instruktionen|befehle|regeln|vorgaben)\b"
    r"|\bdu\s+bist\s+(?:jetzt|nun|ab\s+sofort)\s+(?:ein|eine|mein|im)\b|\bneue\s+(?:system)?anweisung|\bsystemanweisung"
    r"|\bsetze?\s+(?:die\s+)?priorität\s+auf\b|\b(?:ki|assistent)\s*[:,]\s*(?:bitte\s+)?(?:schließe|setze|sende)"
    # Spanish
    r"|\b(?:ignora|olvida|omite)\w*\s+(?:(?:todas|las|tus|sus|el|los)\s+)*instrucciones\b|\bahora\s+eres\s+(?:un|una|mi)\b"
    r"|\bnuevas\s+instrucciones"
    r"|\bestablece\s+la\s+prioridad\b"
    # French
    r"|\b(?:ignore[zr]?|oublie[zr]?)\s+(?:(?:toutes|tous|les|vos|tes)\s+)*(?:instructions|consignes)\b"
    # Russian
    r"|(?:игнорир|забуд|проигнорир|не\s+обращай\s+внимания\s+на)\w*\s+(?:(?:все|всё|свои|твои|ваши)\s+)*"
    r"(?:предыдущ|прежн|системн|прошл)\w*\s+(?:инструкц|указан|правил|команд)\w*"
    r"|\bтеперь\s+ты\s+(?:мой|моя|бот|ассистент|в\s+режиме)|\bустанови\w*\s+приоритет\b"
    # Chinese
    r"|(?:忽略|无视|忽视|忘记|不要理会).{0,10}?(?:指令|指示|说明|规则|提示)|你现在是|系统提示|(?:将|把)优先级(?:设置|设|改)为"
)
_DELIMITER = re.compile(
    r"(?i)</?\s*(?:ticket_text|ticket|system|assistant|user|instructions?|prompt|data)\s*>"
    r"|<\|(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|<<\s*/?SYS\s*>>"
    r"|^\s*#{2,}\s*(?:system|instructions?)\b|^\s*(?:system|assistant)\s*:"
    r"|(?:BEGIN|END)\s+(?:SYSTEM\s+PROMPT|INSTRUCTIONS)",
    re.M,
)
# "ignore previous instructions" with every non-letter removed (catches i.g.n.o.r.e and s p a c i n g).
_SQUASHED = re.compile(r"ignore(?:all|any|the)*(?:previous|prior|above)(?:instructions|rules|prompts)")
_LEET = str.maketrans("013457@$!|", "oieastasil")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9_-]{16,}={0,2}")


# Cyrillic and Greek look-alikes (service.domain.directives.TO_LATIN) are folded for detection only: the text itself
# is not changed (Russian stays Russian), and folded real Cyrillic/Greek words do not spell override phrases.
_CONFUSABLES = TO_LATIN


def _override_in(text: str) -> bool:
    """An override phrase in plain, spaced-out or leetspeak form."""
    if _OVERRIDE.search(text):
        return True
    letters = re.sub(r"[^a-z]", "", text.lower().translate(_LEET))
    return bool(_SQUASHED.search(letters))


def _decoded_base64(text: str) -> list[str]:
    """Readable text hidden in base64 runs (bounded in count and size)."""
    found: list[str] = []
    for i, m in enumerate(_BASE64_RUN.finditer(text)):
        if i >= _MAX_DECODE_CANDIDATES:
            break
        run = m.group(0)[:_MAX_DECODE_LEN]
        run = run[: len(run) - len(run) % 4] if "=" not in run else run
        try:
            alt = b"-_" if "-" in run or "_" in run else None
            raw = base64.b64decode(run + "=" * (-len(run) % 4), altchars=alt)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded.isprintable() or all(c.isprintable() or c.isspace() for c in decoded):
            found.append(decoded)
    return found


def injection_signals(text: str, *, hidden: str = "") -> list[str]:
    """Why `text` looks like an attempt to instruct the model (empty when it does not)."""
    signals: list[str] = []
    if _override_in(text):
        signals.append("override_phrase")
    elif any(_override_in(view) for view, folded in views(text) if folded):
        signals.append("homoglyph_override")
    if _DELIMITER.search(text):
        signals.append("fake_delimiter")
    if hidden.strip():
        signals.append("hidden_tag_text")
    signals += directive_signals(text)
    if any(_override_in(d) or _DELIMITER.search(d) or directive_signals(d) for d in _decoded_base64(text)):
        signals.append("encoded_base64")
    if not signals[:1] == ["override_phrase"] and _override_in(codecs.decode(text, "rot13")):
        signals.append("encoded_rot13")
    return signals


# --- the one entry point ---------------------------------------------------------------------------------


def scrub(text: str) -> Scrubbed:
    """Normalise, redact secrets/PII, flag likely injection and take directives out; never raises; idempotent.

    Label-like directives (``Priority: P1``, ``set the queue to Billing``) are replaced by a neutral mark in the
    returned text, so whatever ranks labels on it ranks them without the demand; `directives` keeps what was
    demanded. Text already redacted at ingest still carries its placeholders, so it stays flagged as a secret.
    """
    normal, stripped, hidden = normalize_unicode(text)
    clean, counts = redact(normal)
    signals = injection_signals(normal, hidden=hidden)
    clean, found = neutralise(clean)
    flags = []
    if stripped:
        flags.append(FLAG_UNICODE)
    if counts or _PLACEHOLDER_SEEN.search(clean):
        flags.append(FLAG_SECRET)
    if signals:
        flags.append(FLAG_INJECTION)
    return Scrubbed(
        text=clean,
        flags=flags,
        redactions=counts,
        signals=signals,
        directives={d.field: d.value for d in found},
    )
