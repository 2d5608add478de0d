"""A small, dependency-free language identifier: script first, then stop-word profiles for Latin scripts.
Unknown languages return None (the reply prompt then says 'the language of the ticket')."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "pt": "Portuguese",
    "it": "Italian",
    "nl": "Dutch",
    "pl": "Polish",
    "sv": "Swedish",
    "da": "Danish",
    "no": "Norwegian",
    "fi": "Finnish",
    "cs": "Czech",
    "tr": "Turkish",
    "ru": "Russian",
    "uk": "Ukrainian",
    "bg": "Bulgarian",
    "el": "Greek",
    "ar": "Arabic",
    "he": "Hebrew",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "hi": "Hindi",
    "th": "Thai",
}

_STOP = {
    "en": "the and to of is in it you that for on with this have are be not we my our please can was i",
    "de": "der die das und ist nicht ich zu mit sie es ein eine den dem wir bitte ihr für auf von sich mein unser",
    "fr": "le la les et est une des pour que pas je vous nous avec dans sur mon notre ce il merci",
    "es": "el la los las y es que de una por para no con mi nuestro su se lo gracias estoy",
    "pt": "o a os as e é que de um uma para não com meu nosso por se obrigado está você",
    "it": "il lo la gli le e è che di un una per non con mio nostro sono grazie",
    "nl": "de het een en is niet ik je wij met voor op van dat dit mijn ons bedankt",
    "pl": "i w nie się na jest że do z to jak mój dziękuję proszę",
    "sv": "och att det är en som på för med jag inte vi har tack",
    "da": "og at det er en som på for med jeg ikke vi har tak",
    "no": "og at det er en som på for med jeg ikke vi har takk",
    "fi": "ja on ei se että minä me kiitos olen",
    "cs": "a je se na že to v s z pro jsem děkuji",
    "tr": "ve bir bu için ile de da ne çok teşekkürler",
}
_STOPSETS = {k: set(v.split()) for k, v in _STOP.items()}
_CYR_UK = set("іїєґ")
_CYR_BG = set("ъ")


def _script_counts(text: str) -> Counter[str]:
    c: Counter[str] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if "CYRILLIC" in name:
            c["cyr"] += 1
        elif "GREEK" in name:
            c["el"] += 1
        elif "ARABIC" in name:
            c["ar"] += 1
        elif "HEBREW" in name:
            c["he"] += 1
        elif "HIRAGANA" in name or "KATAKANA" in name:
            c["ja"] += 1
        elif "HANGUL" in name:
            c["ko"] += 1
        elif "CJK" in name:
            c["zh"] += 1
        elif "DEVANAGARI" in name:
            c["hi"] += 1
        elif "THAI" in name:
            c["th"] += 1
        elif "LATIN" in name:
            c["lat"] += 1
    return c


def detect(text: str) -> str | None:
    """ISO 639-1 code, or None when unsure."""
    if not text or not text.strip():
        return None
    scripts = _script_counts(text)
    if not scripts:
        return None
    top, _ = scripts.most_common(1)[0]
    if top == "cyr":
        low = text.lower()
        if any(ch in _CYR_UK for ch in low):
            return "uk"
        return "bg" if any(ch in _CYR_BG for ch in low) and "ы" not in low else "ru"
    if top == "zh" and scripts.get("ja"):
        return "ja"
    if top != "lat":
        return top
    words = re.findall(r"[^\W\d_]+", text.lower())
    if not words:
        return None
    scores = {lang: sum(1 for w in words if w in s) for lang, s in _STOPSETS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


def name(code: str | None) -> str:
    return NAMES.get(code or "", "the same language as the ticket")
