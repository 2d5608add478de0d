"""Article text: HTML to plain text, passages, and the per-language analysis both search backends share."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

import html_text
import Stemmer
from lxml import etree
from lxml import html as lxml_html
from stop_words import LANGUAGE_MAPPING, get_stop_words

# ISO 639-1 -> PostgreSQL text search configuration (those every PostgreSQL ships); others: 'simple'.
TS_CONFIGS = {
    "da": "danish",
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fi": "finnish",
    "fr": "french",
    "hu": "hungarian",
    "it": "italian",
    "nb": "norwegian",
    "nl": "dutch",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sv": "swedish",
    "tr": "turkish",
}
PASSAGE_MAX_CHARS = 900  # a few paragraphs: enough context to answer from, short enough to quote in a prompt
_WORD = re.compile(r"\w+", re.UNICODE)
_BLANK_LINES = re.compile(r"\n\s*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Confluence storage-format parameters (macro names, colours, ids) are settings, not prose.
_DROP_TAGS = ("ac:parameter", "ri:attachment", "ri:user", "ac:placeholder")
QUERY_TERM_REPEAT_CAP = 3  # a word said three times in a ticket matters; the tenth repetition adds nothing


def language_code(raw: str | None, default: str = "en") -> str:
    """'en', 'de', ... from 'en', 'en_US', 'de-DE' or a ServiceNow language value; `default` when unknown."""
    code = (raw or "").strip().lower().replace("_", "-").split("-", 1)[0]
    return code if re.fullmatch(r"[a-z]{2,3}", code) else default


def ts_config(language: str) -> str:
    """The PostgreSQL configuration that stems `language` ('simple' when PostgreSQL has none)."""
    return TS_CONFIGS.get(language_code(language, ""), "simple")


def html_to_text(markup: str) -> str:
    """Readable plain text of an article body (HTML or Confluence storage format): blocks become paragraphs."""
    markup = (markup or "").replace("\x00", "")  # lxml would turn a NUL into U+FFFD
    if not markup.strip():
        return ""
    try:
        root = lxml_html.fromstring(markup)
    except (etree.ParserError, ValueError):
        return _normalise(markup)
    for element in root.iter(*_DROP_TAGS):
        element.drop_tree()
    text = html_text.extract_text(root, guess_layout=True)
    return _normalise(text)


def _normalise(text: str) -> str:
    """Trim lines, collapse runs of blank lines to one, drop NULs."""
    lines = [line.strip() for line in text.replace("\x00", "").replace("\r\n", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def split_passages(text: str, *, max_chars: int = PASSAGE_MAX_CHARS) -> list[str]:
    """Consecutive paragraphs packed into passages of at most `max_chars` (a longer paragraph is cut at sentences)."""
    pieces: list[str] = []
    for paragraph in (p.strip() for p in _BLANK_LINES.split(text)):
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        pieces.extend(_cut(paragraph, max_chars))
    passages: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > max_chars:
            passages.append(current)
            current = piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        passages.append(current)
    return passages


def _cut(paragraph: str, max_chars: int) -> list[str]:
    """A long paragraph in sentence-aligned chunks; a single over-long sentence is cut at a word boundary."""
    chunks: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            if current:
                chunks.append(current)
                current = ""
            chunks.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            chunks.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        chunks.append(current)
    return chunks


@cache
def _stemmer(language: str) -> Stemmer.Stemmer | None:
    """Snowball stemmer of a language (the algorithm PostgreSQL's configurations use), None when there is none."""
    config = ts_config(language)
    return Stemmer.Stemmer(config) if config != "simple" else None


@cache
def _stop_words(language: str) -> frozenset[str]:
    """Stop words of a language (empty for languages without a list)."""
    code = language_code(language, "")
    return frozenset(get_stop_words(code)) if code in LANGUAGE_MAPPING else frozenset()


def analyse(text: str, language: str) -> list[str]:
    """The index terms of `text` in `language`: lower-cased words without stop words, snowball-stemmed."""
    stop = _stop_words(language)
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in stop and not w.isdigit()]
    stemmer = _stemmer(language)
    return stemmer.stemWords(words) if stemmer is not None else words


def query_terms(text: str, language: str, *, limit: int = 256) -> Counter[str]:
    """A query's terms with how often each occurs (capped), the `limit` most frequent first-seen ones."""
    counts = Counter(analyse(text, language))
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return Counter({term: min(n, QUERY_TERM_REPEAT_CAP) for term, n in ranked})


def plain_terms(text: str, language: str, *, limit: int) -> Counter[str]:
    """Unstemmed words without stop words (the language's and English ones, which greetings and signatures mix
    in), the `limit` most frequent with counts capped: for an index that stems by itself."""
    stop = _stop_words(language) | _stop_words("en")
    counts = Counter(w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in stop and not w.isdigit())
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return Counter({term: min(n, QUERY_TERM_REPEAT_CAP) for term, n in ranked})


def estimate_tokens(text: str) -> int:
    """A model-agnostic token estimate (about four characters a token) for prompt budgets."""
    return (len(text) + 3) // 4
