"""The triage model behind the domain Triager port: the real LLM (models/) or the deterministic fake."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.domain.ports import Triager
from service.domain.schemas import CanonicalTicket, LabelPrediction, TriageResult
from service.settings import Settings
from workers.fake_triager import FakeTriager


class ModelTriager:
    """Adapts models' Triager (Prediction objects) to the domain's TriageResult; one instance per process."""

    def __init__(self, triager: Any, *, draft_replies: bool) -> None:
        self._triager = triager
        self._draft_replies = draft_replies
        self.model_version: str = str(getattr(triager, "model_version", ""))
        self.adapter_version: str | None = getattr(triager, "adapter_version", None)
        self.trained_at: str | None = (getattr(triager, "meta", None) or {}).get("trained_at")

    def triage(self, tickets: Sequence[CanonicalTicket]) -> list[TriageResult]:
        """Run the whole batch through the model in one call and map every Prediction."""
        from models.inference import TicketInput

        inputs = [TicketInput(id=t.external_id, subject=t.subject, body=t.body) for t in tickets]
        started = time.perf_counter()
        preds = self._triager.predict(inputs, draft_replies=self._draft_replies)
        batch_s = time.perf_counter() - started
        return [self._map(p, batch_s / max(1, len(inputs))) for p in preds]

    def remember(self, rows: Sequence[dict[str, Any]]) -> int:
        """Reviewed tickets (service.review.feedback.training_rows) into the model's ticket memory."""
        from models.inference import TicketInput
        from service.review.feedback import TEXT_COLUMNS  # the rows' producer; a row's other keys are label fields

        tickets = [TicketInput(id=str(r["id"]), subject=r.get("subject") or "", body=r.get("body") or "") for r in rows]
        labels = [{k: str(v) for k, v in r.items() if k not in TEXT_COLUMNS and v is not None} for r in rows]
        return int(self._triager.remember(tickets, labels, [r.get("reply") for r in rows]))

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
    )


def load_triager(settings: Settings) -> Triager:
    """Load the configured backend (call after fork: the model must never live in the Celery parent)."""
    m = settings.model
    if m.backend == "fake":
        return FakeTriager(latency_ms=m.fake_latency_ms, draft_replies=m.draft_replies)
    from models.inference import Triager as LLMTriager

    return ModelTriager(LLMTriager.load(model_config(settings)), draft_replies=m.draft_replies)
