"""A deterministic stand-in for the LLM (settings.model.backend == "fake"): plumbing tests only.

Labels come from keywords and a hash of the text, so the same ticket always gets the same answer. Two
markers in the ticket body let fault tests steer it: `FAKE_LLM_RAISE` makes the batch raise, and
`FAKE_LLM_SLEEP=<seconds>` makes the batch sleep (to kill a worker mid-batch).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

from service.domain.schemas import CanonicalTicket, DraftResult, LabelPrediction, TriageResult

FAKE_MODEL_VERSION = "fake-llm-1"
QUEUES = ("Technical Support", "Billing and Payments", "Network Infrastructure", "IT Support")
CATEGORIES = ("SOFTWARE_APP", "BILLING_PURCHASE", "NETWORK", "GENERAL")
PRIORITIES = ("P1", "P2", "P3", "P4")
_KEYWORDS = {"invoice": 1, "billing": 1, "rechnung": 1, "vpn": 2, "network": 2, "netzwerk": 2, "login": 3}
_SLEEP_RE = re.compile(r"FAKE_LLM_SLEEP=(\d+(?:\.\d+)?)")


class FakeLLMError(RuntimeError):
    """Raised on purpose for a ticket carrying the FAKE_LLM_RAISE marker."""


class FakeTriager:
    """Implements the domain Triager port without a model; latency per batch is configurable."""

    model_version = FAKE_MODEL_VERSION
    adapter_version: str | None = None

    def __init__(self, *, latency_ms: int = 0, draft_latency_ms: int = 0, draft_replies: bool = True) -> None:
        self.latency_ms = latency_ms
        self.draft_latency_ms = draft_latency_ms
        self.draft_replies = draft_replies
        self.batches: list[int] = []  # sizes of the batches seen, for tests
        self.draft_batches: list[int] = []
        self.evidence_seen: list[list[str | None]] = []
        self.draft_extra = ""  # appended to every draft: tests make the "model" invent links and addresses
        self.forgotten: set[str] = set()  # ticket-memory ids erased (the fake has no memory; tests read this)

    def forget(self, ids: Sequence[str]) -> int:
        """Record erased ids; the fake keeps no ticket memory, so nothing is removed."""
        self.forgotten.update(ids)
        return 0

    def classify(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        """Labels only (the first stage)."""
        results = self.triage(tickets, draft=False)
        return results

    def draft(
        self, tickets: Sequence[CanonicalTicket], evidence: Sequence[str | None] | None = None
    ) -> list[DraftResult]:
        """A reply per ticket after one simulated drafting call (`draft_latency_ms`, `FAKE_DRAFT_RAISE` fails it);
        the evidence it was given is kept for tests and, as an LLM would be asked to, the reply names the first
        article it was shown."""
        self.evidence_seen.append(list(evidence) if evidence is not None else [None] * len(tickets))
        started = time.perf_counter()
        if any("FAKE_DRAFT_RAISE" in t.body for t in tickets):
            raise FakeLLMError("fake drafting failure requested by the ticket")
        if self.draft_latency_ms:
            time.sleep(self.draft_latency_ms / 1000)
        self.draft_batches.append(len(tickets))
        per_ticket = (time.perf_counter() - started) / max(1, len(tickets))
        given = self.evidence_seen[-1]
        return [
            DraftResult(
                draft_reply=(_reply(t, e) + self.draft_extra)
                if self.draft_replies and (t.subject or t.body).strip()
                else None,
                source="model",
                timings={"draft_s": per_ticket},
            )
            for t, e in zip(tickets, given, strict=True)
        ]

    def triage(self, tickets: Sequence[CanonicalTicket], *, draft: bool = True) -> list[TriageResult]:
        """One result per ticket, in order, after one simulated model call for the whole batch (with a draft unless
        `draft` is false)."""
        started = time.perf_counter()
        text = "\n".join(t.body for t in tickets)
        if "FAKE_LLM_RAISE" in text:
            raise FakeLLMError("fake model failure requested by the ticket")
        delay = self.latency_ms / 1000 + sum(float(s) for s in _SLEEP_RE.findall(text))
        if delay:
            time.sleep(delay)
        self.batches.append(len(tickets))
        elapsed = time.perf_counter() - started
        return [self._one(t, elapsed / max(1, len(tickets)), draft) for t in tickets]

    def _one(self, ticket: CanonicalTicket, per_ticket_s: float, draft: bool) -> TriageResult:
        """Deterministic labels: a keyword picks the queue, the text's hash the priority and confidences."""
        text = f"{ticket.subject}\n{ticket.body}".lower()
        digest = hashlib.sha256(text.encode()).digest()
        q = next((i for k, i in _KEYWORDS.items() if k in text), digest[0] % len(QUEUES))
        p = 0 if "outage" in text or "p1" in text else 1 + digest[1] % (len(PRIORITIES) - 1)
        conf = 0.5 + (digest[2] / 255) * 0.5
        predictions = {
            "queue": _pred(QUEUES, q, conf),
            "category": _pred(CATEGORIES, q, min(1.0, conf + 0.05)),
            "priority": _pred(PRIORITIES, p, 0.5 + (digest[3] / 255) * 0.5),
        }
        reply = _reply(ticket) if self.draft_replies and draft else None
        return TriageResult(
            predictions=predictions,
            draft_reply=reply,
            model_version=FAKE_MODEL_VERSION,
            adapter_version=None,
            timings={"model_s": per_ticket_s},
        )


def _reply(ticket: CanonicalTicket, evidence: str | None = None) -> str:
    reply = f'Hello, thank you for your message about "{ticket.subject[:80]}". We are looking into it.'
    first = (evidence or "").split("\n", 1)[0]
    return f"{reply} See {first}." if first else reply


def _pred(labels: Sequence[str], index: int, confidence: float) -> LabelPrediction:
    """A prediction whose probabilities sum to 1 with `confidence` on the chosen label."""
    rest = (1.0 - confidence) / (len(labels) - 1)
    probs = {lab: (confidence if i == index else rest) for i, lab in enumerate(labels)}
    return LabelPrediction(label=labels[index], confidence=round(confidence, 4), probabilities=probs)
