"""A year of resolved tickets for the history fakes, made on demand from the shared ticket set.

Each ticket takes its text, queue, category, priority and first agent reply from ../shared/data/tickets (real
multilingual help-desk text, in a fixed shuffled order so that any stretch of time mixes languages), and gets the
comment thread real tickets have: the reporter chasing, internal agent notes, the service's own notes and
acknowledgements (with its write-back marker), an automatic system comment, the agent's public reply, the
reporter's thanks. Some tickets are re-filings of the one before, some are closed as duplicates, and blocks of
tickets are closed in the same second (a bulk closure), as ServiceNow keyset paging must handle.

Nothing is stored per ticket: ticket n is computed from n, so a fake can serve 200,000 of them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

SHARED = Path(os.environ.get("ITSM_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
CORPUS = SHARED / "data" / "tickets" / "train.jsonl"
REFILING_EVERY = 97  # ticket n with n % 97 == 96 repeats ticket n - 1 ("Re: " + the same text)
DUPLICATE_EVERY = 89  # ticket n with n % 89 == 88 is closed with resolution "Duplicate"
BULK = (3000, 450, 150)  # (every, start, length): tickets n in [k*3000 + 450, k*3000 + 600) closed in one second
Role = Literal["reporter", "agent", "bot", "system"]


@dataclass(frozen=True)
class CorpusRow:
    """One ticket of the shared set."""

    subject: str
    body: str
    queue: str
    category: str
    priority: str
    language: str
    reply: str | None


@functools.cache
def corpus() -> tuple[CorpusRow, ...]:
    """The shared ticket set in a fixed shuffled order."""
    rows = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append(
                CorpusRow(
                    subject=r.get("subject") or "",
                    body=r.get("body") or "",
                    queue=r["queue"],
                    category=r["category"],
                    priority=r["priority"],
                    language=r.get("language") or "",
                    reply=r.get("reply") or None,
                )
            )
    random.Random(2026).shuffle(rows)
    return tuple(rows)


@dataclass(frozen=True)
class PastComment:
    """One comment of a ticket's thread, oldest first."""

    role: Role
    public: bool
    text: str


@dataclass(frozen=True)
class PastTicket:
    """A resolved ticket as both fakes serve it."""

    n: int
    project: str
    subject: str
    body: str
    queue: str
    category: str
    priority: str
    language: str
    reply: str | None
    resolved_at: datetime
    updated_at: datetime
    resolution: str = "Done"
    comments: tuple[PastComment, ...] = field(default=())

    @property
    def key(self) -> str:
        """The Jira issue key."""
        return f"{self.project}-{self.n + 1}"

    @property
    def issue_id(self) -> str:
        """The Jira issue id."""
        return str(200_000 + self.n)

    @property
    def number(self) -> str:
        """The ServiceNow incident number."""
        return f"INC{1_000_000 + self.n:07d}"

    @property
    def sys_id(self) -> str:
        """The ServiceNow sys_id (32 hex, increasing with n, so ties sort in ticket order)."""
        return f"{0xA0000000 + self.n:032x}"


def marker(n: int, part: str) -> str:
    """A write-back marker line like the connectors append."""
    return "itsm-ref:" + hashlib.sha256(f"{n}|{part}".encode()).hexdigest()[:20]


def thread(n: int, reply: str | None, queue: str) -> tuple[PastComment, ...]:
    """The comment thread of ticket n: noise around the agent's first public reply."""
    c: list[PastComment] = []
    if n % 3 == 0:
        c.append(PastComment("reporter", True, "Any update on this? It is still happening."))
    if n % 2 == 0:
        c.append(PastComment("agent", False, "Checked the logs; this needs second level."))
    if n % 4 == 1:
        c.append(PastComment("bot", False, f"AI triage (internal)\nqueue: {queue}\n{marker(n, 'note')}"))
    if n % 5 == 2:
        c.append(PastComment("bot", True, f"Hello, we received your request.\n{marker(n, 'ack')}"))
    if n % 11 == 5:
        c.append(PastComment("system", True, "This request is waiting for support."))
    if reply:
        c.append(PastComment("agent", True, reply))
    if n % 7 == 3:
        c.append(PastComment("reporter", True, "Thanks, that fixed it."))
    return tuple(c)


class PastTickets:
    """`count` generated tickets resolved over `span` up to `end`, plus tickets a test appends."""

    def __init__(
        self,
        count: int,
        *,
        project: str = "SD",
        end: datetime | None = None,
        span: timedelta = timedelta(days=360),
        bulk: tuple[int, int, int] = BULK,
    ) -> None:
        self.count = count
        self.bulk = bulk
        self.project = project
        self.end = (end or datetime.now(UTC)).replace(microsecond=0) - timedelta(days=1)
        self.start = self.end - span
        self.step = span / max(count, 1)
        self.extra: list[PastTicket] = []

    def __len__(self) -> int:
        return self.count + len(self.extra)

    def __iter__(self) -> Iterator[PastTicket]:
        for n in range(len(self)):
            yield self[n]

    def __getitem__(self, n: int) -> PastTicket:
        if n < 0 or n >= len(self):
            raise IndexError(n)
        if n >= self.count:
            return self.extra[n - self.count]
        rows = corpus()
        row = rows[n % len(rows)]
        subject, body = row.subject, row.body
        if n // len(rows):  # a second pass over the set: the same words, another person's ticket
            body += f"\n\nAsset tag: LT-{n:06d}"
        if n % REFILING_EVERY == REFILING_EVERY - 1 and n > 0:
            before = self[n - 1]
            subject, body = "Re: " + before.subject, before.body
            row = replace(row, queue=before.queue, category=before.category, priority=before.priority)
        resolved = self.start + self.step * n
        every, first, length = self.bulk
        block = n % every
        closed = self.start + self.step * (n - block + first) if first <= block < first + length else resolved
        return PastTicket(
            n=n,
            project=self.project,
            subject=subject,
            body=body,
            queue=row.queue,
            category=row.category,
            priority=row.priority,
            language=row.language,
            reply=row.reply,
            resolved_at=resolved.replace(microsecond=0),
            updated_at=(closed + timedelta(seconds=60)).replace(microsecond=0),
            resolution="Duplicate" if n % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 else "Done",
            comments=thread(n, row.reply, row.queue),
        )

    def add(
        self,
        *,
        subject: str,
        body: str,
        queue: str = "Technical Support",
        category: str = "SOFTWARE_APP",
        priority: str = "P3",
        reply: str | None = None,
        comments: tuple[PastComment, ...] | None = None,
        resolution: str = "Done",
        project: str | None = None,
    ) -> PastTicket:
        """Append a ticket resolved after all others (a test's hand-made case)."""
        n = len(self)
        when = self.end + timedelta(minutes=n - self.count + 1)
        ticket = PastTicket(
            n=n,
            project=project or self.project,
            subject=subject,
            body=body,
            queue=queue,
            category=category,
            priority=priority,
            language="",
            reply=reply,
            resolved_at=when,
            updated_at=when + timedelta(seconds=60),
            resolution=resolution,
            comments=comments if comments is not None else thread(n, reply, queue),
        )
        self.extra.append(ticket)
        return ticket
