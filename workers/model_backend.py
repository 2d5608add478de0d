"""The triage model behind the domain Triager port: the real LLM (models/) or the deterministic fake."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from service.domain.ports import Triager
from service.domain.schemas import CanonicalTicket, DraftResult, LabelPrediction, TriageResult
from service.settings import Settings
from workers.fake_triager import FakeTriager

log = structlog.get_logger(__name__)


class ModelTriager:
    """Adapts models' Triager (Prediction objects) to the domain's TriageResult; one instance per process."""

    def __init__(
        self,
        triager: Any,
        *,
        draft_replies: bool,
        adapter_version: str | None = None,
        memory_since: str | None = None,
    ) -> None:
        self._triager = triager
        self._draft_replies = draft_replies
        self.model_version: str = str(getattr(triager, "model_version", ""))
        # a registry adapter is recorded by its registry version (v3), what the Adapters page and rollback read
        self.adapter_version: str | None = adapter_version or getattr(triager, "adapter_version", None)
        # where the memory sync starts: reviews after this are not in the adapter's training data
        self.trained_at: str | None = memory_since or (getattr(triager, "meta", None) or {}).get("trained_at")

    @property
    def llm(self) -> Any:
        """The models' Triager behind this adapter (another adapter can share its base model)."""
        return self._triager

    def unload(self) -> None:
        """Free this adapter's weights from a base model other adapters still use (after a swap)."""
        unload = getattr(self._triager, "unload", None)
        if unload is not None:
            unload()

    def classify(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        """Labels for the whole batch in one model call, each Prediction mapped (no draft: see `draft`)."""
        inputs = _inputs(tickets)
        started = time.perf_counter()
        preds = self._triager.classify(inputs)
        batch_s = time.perf_counter() - started
        return [self._map(p, batch_s / max(1, len(inputs))) for p in preds]

    def draft(
        self, tickets: Sequence[CanonicalTicket], evidence: Sequence[str | None] | None = None
    ) -> list[DraftResult]:
        """A reply suggestion per ticket (a past reply or an LLM draft, as reply_mode says, LLM drafts shown the
        knowledge-base `evidence`); none when drafting is off."""
        if not self._draft_replies:
            return [DraftResult() for _ in tickets]
        out = []
        for s in self._triager.suggest(_inputs(tickets), evidence):
            out.append(
                DraftResult(
                    draft_reply=s.reply or None,
                    source=s.source,
                    flags=[str(f) for f in s.flags],
                    timings={"draft_s": s.seconds},
                    grounds=[str(g) for g in s.grounds],
                )
            )
        return out

    def needs_generation(self, tickets: Sequence[CanonicalTicket]) -> list[bool]:
        """Which tickets' suggestions are LLM drafts (slow) rather than past replies (workers/drafts.py)."""
        if not self._draft_replies:
            return [False] * len(tickets)
        return self._triager.needs_llm(_inputs(tickets))

    def warm_up(self) -> float:
        """Compile the drafting shapes now (static drafting on a GPU), not on the first request; seconds taken."""
        drafter = getattr(self._triager, "drafter", None)
        if drafter is None or not self._draft_replies:
            return 0.0
        using = getattr(self._triager, "using", None)
        if using is None:
            return float(drafter.warm_up())
        with using():  # the shapes are compiled with this adapter active
            return float(drafter.warm_up())

    def triage(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        """Labels and draft in one call (offline use and benchmarks; the worker runs the two stages apart)."""
        results = self.classify(tickets)
        for result, drafted in zip(results, self.draft(tickets), strict=True):
            result.draft_reply = drafted.draft_reply
            result.flags += drafted.flags
        return results

    def remember(self, rows: Sequence[dict[str, Any]]) -> int:
        """Reviewed tickets (service.review.feedback.training_rows) into the model's ticket memory."""
        from models.inference import TicketInput
        from service.review.feedback import TEXT_COLUMNS  # the rows' producer; a row's other keys are label fields

        tickets = [TicketInput(id=str(r["id"]), subject=r.get("subject") or "", body=r.get("body") or "") for r in rows]
        labels = [{k: str(v) for k, v in r.items() if k not in TEXT_COLUMNS and v is not None} for r in rows]
        return int(self._triager.remember(tickets, labels, [r.get("reply") for r in rows]))

    def forget(self, ids: Sequence[str]) -> int:
        """Erased tickets (ticket-memory ids 'source:key') out of the model's memory; returns the rows removed."""
        return int(self._triager.forget(list(ids)))

    def _map(self, pred: Any, per_ticket_s: float) -> TriageResult:
        """models.Prediction -> TriageResult (the one place the two vocabularies meet)."""
        labels = {
            name: LabelPrediction(
                label=str(score.label),
                confidence=min(1.0, max(0.0, float(score.confidence))),
                probabilities={str(k): float(v) for k, v in dict(score.probabilities or {}).items()},
            )
            for name, score in dict(pred.labels).items()
        }
        flags = [str(f) for f in (getattr(pred, "flags", None) or [])]
        if getattr(pred, "truncated", False):
            flags.append("input_truncated")
        timings = {str(k): float(v) for k, v in dict(getattr(pred, "timings", None) or {}).items()}
        timings.setdefault("model_s", per_ticket_s)
        language = getattr(pred, "language", None)
        if language:
            flags.append(f"language:{language}")
        return TriageResult(
            predictions=labels,
            draft_reply=getattr(pred, "reply", None) or None,
            flags=flags,
            model_version=self.model_version,
            adapter_version=self.adapter_version,
            timings=timings,
        )


def model_config(settings: Settings, adapter: str | None = None) -> Any:
    """Settings.model -> models.config.ModelConfig (the one mapping; the CLI's model commands use it too)."""
    from models.config import ModelConfig

    m = settings.model
    return ModelConfig(
        base=m.base,
        adapter=adapter if adapter is not None else m.adapter,
        device=m.device,
        dtype=m.dtype,
        cache_dir=Path(m.cache_dir),
        batch_size=m.batch_size,
        max_new_tokens=m.max_new_tokens,
        max_input_chars=m.max_input_chars,
        reply_mode=m.reply_mode,
        reply_min_similarity=m.reply_min_similarity,
        memory_max_rows=m.memory_max_rows,
        static_drafting=m.static_drafting,
        draft_batch_size=m.draft_batch_size,
        draft_batch_buckets=tuple(m.draft_batch_buckets),
        draft_prompt_buckets=tuple(m.draft_prompt_buckets),
        offline=m.offline,
        hub_kernels=m.hub_kernels,
    )


def _inputs(tickets: Sequence[CanonicalTicket]) -> list[Any]:
    """CanonicalTicket -> models.inference.TicketInput."""
    from models.inference import TicketInput

    return [TicketInput(id=t.external_id, subject=t.subject, body=t.body) for t in tickets]


def load_triager(settings: Settings) -> Triager:
    """Load the configured backend (call after fork: the model must never live in the Celery parent)."""
    m = settings.model
    if m.backend == "fake":
        return FakeTriager(
            latency_ms=m.fake_latency_ms, draft_latency_ms=m.fake_draft_latency_ms, draft_replies=m.draft_replies
        )
    from models.inference import Triager as LLMTriager

    llm = LLMTriager.load(model_config(settings))
    warn_label_maps(settings, (getattr(llm, "meta", None) or {}).get("fields") or {})
    return ModelTriager(llm, draft_replies=m.draft_replies)


def warn_label_maps(settings: Settings, fields: dict[str, list[str]]) -> list[str]:
    """Log (at start-up) every label map that names labels the adapter cannot produce or misses ones it does."""
    from service.domain.label_maps import map_warnings

    messages = [w.message() for w in map_warnings(settings, fields)]
    for message in messages:
        log.warning("label_map_mismatch", detail=message)
    return messages
