"""Tickets for the learning-loop tests: three kinds the first adapter knows, and printer tickets, a kind it never saw,
which agents route to a new queue. Each ticket is a template with its own reference number and sometimes a
courtesy line, so no two texts are the same."""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS: dict[str, list[tuple[str, str, str]]] = {
    "network": [
        ("VPN down", "I cannot connect to the VPN since this morning, the tunnel drops.", "P2"),
        ("WLAN geht nicht", "Das WLAN im Büro bricht ständig ab, bitte prüfen Sie den Router.", "P2"),
        ("Wi-Fi outage", "The office Wi-Fi keeps disconnecting every few minutes.", "P4"),
        ("Network slow", "The network share is very slow and the connection times out.", "P4"),
    ],
    "billing": [
        ("Invoice wrong", "Our March invoice charged us twice for the same licence.", "P4"),
        ("Rechnung fehlerhaft", "Die Rechnung für März enthält eine doppelte Abbuchung.", "P4"),
        ("Refund request", "Please refund the duplicate payment on our account.", "P2"),
        ("Payment failed", "The card payment for our subscription was declined twice.", "P2"),
    ],
    "access": [
        ("Password reset", "I am locked out of my account and need a password reset.", "P2"),
        ("Konto gesperrt", "Mein Konto ist gesperrt, ich kann mich nicht anmelden.", "P2"),
        ("Folder access", "Need access to the shared finance folder for my new role.", "P4"),
        ("Login fails", "My login to the portal fails with an invalid credentials message.", "P4"),
    ],
    "printing": [
        ("Printer jammed", "The printer on floor 3 jams on every page we print.", "P4"),
        ("Drucker druckt nicht", "Der Drucker im zweiten Stock zeigt dauernd einen Papierstau.", "P4"),
        ("Toner empty", "The toner of the office printer is empty, please replace the cartridge.", "P4"),
        ("Printer offline", "My laptop cannot find the network printer, the printer shows offline.", "P2"),
    ],
}
KNOWN = ("network", "billing", "access")  # what the first adapter is trained on
NEW = "printing"  # the queue agents create for printer tickets
# printer tickets written unlike any template, for asking the model itself
UNSEEN_PRINTER = [
    ("Print queue stuck", "Nothing comes out of the printer in room 12; every print job stays in the queue."),
    ("Druckerproblem", "Der Drucker verschmiert Toner auf jeder Seite, die Ausdrucke sind unlesbar."),
]
_COURTESY = ["Thanks a lot.", "Kind regards, Sam.", "Please help quickly.", "Danke!"]


@dataclass(frozen=True)
class Sample:
    """One ticket with its true labels."""

    subject: str
    body: str
    queue: str
    priority: str
    reply: str = "Thank you, we are looking into it."


def sample(kind: str, n: int, rng: random.Random) -> Sample:
    """A ticket of a kind: one of its templates, reference number n, sometimes a courtesy line."""
    subject, body, priority = rng.choice(KINDS[kind])
    extra = f" {rng.choice(_COURTESY)}" if rng.random() < 0.5 else ""
    return Sample(subject, f"{body} (ref {1000 + n}){extra}", kind, priority)


def stream(kinds: list[str], count: int, seed: int) -> list[Sample]:
    """`count` tickets cycling through `kinds` in order (so every stretch of the stream has each kind)."""
    rng = random.Random(seed)
    return [sample(kinds[i % len(kinds)], seed * 1000 + i, rng) for i in range(count)]


def training_rows(count: int, seed: int = 7) -> list[dict[str, str]]:
    """The first adapter's training file: the known kinds only."""
    return [
        {"id": f"h{i}", "subject": s.subject, "body": s.body, "queue": s.queue, "priority": s.priority,
         "reply": s.reply}
        for i, s in enumerate(stream(list(KNOWN), count, seed))
    ]  # fmt: skip
