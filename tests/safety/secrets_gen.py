"""Generated secrets of every kind the scrubber recognises, each with the exact text that must never be stored."""

from __future__ import annotations

import base64
import random
import string
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Secret:
    """How the secret is written in a ticket, and the value that must not survive (the part after a keyword)."""

    kind: str
    written: str
    value: str


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _mixed(rng: random.Random, alphabet: str, n: int) -> str:
    """Random text that has an upper-case letter, a lower-case letter and a digit (a key's shape)."""
    while True:
        s = _rand(rng, alphabet, n)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
            return s


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    """A card number with the issuer prefix and a valid Luhn check digit."""
    body = prefix + _rand(rng, string.digits, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body + "0")):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    """An IBAN with correct ISO 13616 check digits."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def every_kind(rng: random.Random) -> list[Secret]:
    """One fresh secret of each recognised kind, written the way people paste them into tickets."""
    pw = _mixed(rng, ALNUM, 9) + rng.choice("!#%&*")
    key_body = "\n".join(base64.b64encode(rng.randbytes(48)).decode() for _ in range(3))
    card = luhn_complete(rng.choice(["4", "51", "55", "2221"]), 16, rng)
    amex = luhn_complete(rng.choice(["34", "37"]), 15, rng)
    grouped = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    de = iban("DE", _rand(rng, string.digits, 18))
    gb = iban("GB", _rand(rng, string.ascii_uppercase, 4) + _rand(rng, string.digits, 14))
    de_grouped = " ".join(de[i : i + 4] for i in range(0, len(de), 4))
    ssn = f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    jwt = "eyJ" + _mixed(rng, ALNUM + "_-", 20) + ".eyJ" + _mixed(rng, ALNUM, 30) + "." + _mixed(rng, ALNUM + "_-", 43)
    aws_secret = _mixed(rng, ALNUM + "/+", 40)
    tokens = {
        "github": "ghp_" + _mixed(rng, ALNUM, 36),
        "github_pat": "github_pat_" + _mixed(rng, ALNUM + "_", 60),
        "slack": "xoxb-" + _rand(rng, string.digits, 12) + "-" + _mixed(rng, ALNUM, 24),
        "stripe": "sk_live_" + _mixed(rng, ALNUM, 24),
        "google": "AIza" + _mixed(rng, ALNUM + "_-", 35),
        "gitlab": "glpat-" + _mixed(rng, ALNUM, 20),
    }
    url_pw = _mixed(rng, ALNUM, 12)
    bearer = _mixed(rng, ALNUM, 32)
    kw = rng.choice(["password", "Passwort", "Kennwort", "pwd", "passphrase", "contraseña"])
    return [
        Secret("password", f"{kw}: {pw}", pw),
        Secret("private_key", f"-----BEGIN RSA PRIVATE KEY-----\n{key_body}\n-----END RSA PRIVATE KEY-----",
               key_body.split("\n")[1]),
        Secret("aws_access_key", "AKIA" + _rand(rng, string.ascii_uppercase + string.digits, 16), ""),
        Secret("aws_secret", f"aws_secret_access_key = {aws_secret}", aws_secret),
        Secret("jwt", jwt, jwt.split(".")[1]),
        *[Secret("token", t, t) for t in tokens.values()],
        Secret("bearer", f"Authorization: Bearer {bearer}", bearer),
        Secret("url_password", f"postgres://app:{url_pw}@db.internal:5432/prod", url_pw),
        Secret("card", f"Card {grouped} exp 12/29", grouped),
        Secret("card", f"amex {amex}", amex),
        Secret("iban", f"IBAN {de_grouped}", de_grouped),
        Secret("iban", f"iban: {gb}", gb),
        Secret("ssn", f"my SSN is {ssn}.", ssn),
    ]  # fmt: skip


def must_not_survive(secrets: list[Secret]) -> list[str]:
    """Every string that must never be found at rest, in a log line or in an answer."""
    out = []
    for s in secrets:
        out.append(s.value or s.written)
    return [v for v in out if v]
