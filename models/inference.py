"""Triager: batched label scoring (closed label sets, calibrated probabilities) + batched reply drafting."""

from __future__ import annotations

import hashlib
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import adapter as adapter_io
from models import language as lang
from models import neighbours, prompts
from models.calibration import FieldScores, log_softmax
from models.config import ModelConfig
from models.drafting import Buckets, Drafter
from models.rows import align
from models.ticket_memory import TicketMemory


@dataclass
class TicketInput:
    id: str
    subject: str = ""
    body: str = ""


@dataclass
class LabelScore:
    label: str
    confidence: float
    probabilities: dict[str, float]


@dataclass
class Prediction:
    id: str
    labels: dict[str, LabelScore]
    reply: str | None = None
    language: str | None = None
    truncated: bool = False
    flags: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    reply_source: str | None = None  # "model", or "history:<id>" for a past reply from the ticket memory


@dataclass
class Reply:
    """One suggested reply: its text, its source ("model" or "history:<id>") and the texts it was built from."""

    text: str
    source: str
    grounds: list[str] = field(default_factory=list)


@dataclass
class Suggested:
    """The reply suggested for one ticket: the text, its source ("model" or "history:<id>"), the ticket's language,
    flags about the reply, and the seconds it took per ticket of its batch."""

    reply: str | None
    source: str | None
    language: str | None
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    grounds: list[str] = field(default_factory=list)  # the past reply it reuses or was shown (not the ticket)


def draft_language_flag(ticket_language: str | None, reply: str | None) -> str | None:
    """`draft_language_mismatch` when a draft is detectably not in the ticket's language (shown to the agent)."""
    if not reply or not ticket_language:
        return None
    got = lang.detect(reply)
    return "draft_language_mismatch" if got is not None and got != ticket_language else None


def derive_matrix(probs: dict[str, dict[str, float]], spec: dict[str, Any]) -> dict[str, float]:
    """Distribution of a derived field (e.g. priority = matrix[impact][urgency]) from its sources."""
    a, b = spec["from"]
    out: dict[str, float] = {}
    for la, pa in probs[a].items():
        for lb, pb in probs[b].items():
            target = spec["matrix"].get(la, {}).get(lb)
            if target is not None:
                out[target] = out.get(target, 0.0) + pa * pb
    z = sum(out.values()) or 1.0
    return {k: v / z for k, v in out.items()}


class _Shared:
    """What the Triagers on one base model share: which of its named adapters is active, and the lock each holds
    while it runs the model (a worker's live and shadow adapters, or the old and new one during a swap)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.active = "default"  # peft's name for the adapter a PeftModel was created with


_SHARED: weakref.WeakKeyDictionary[Any, _Shared] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _shared(lm: Any) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(lm)
        if shared is None:
            shared = _SHARED[lm] = _Shared()
        return shared


def adapter_key(name: str) -> str:
    """A peft adapter name from a version string (peft names are module keys: no dots)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)[:60] or "adapter"


class Triager:
    """Loads the base model + adapter once; `predict` classifies and drafts replies in batches."""

    def __init__(
        self,
        cfg: ModelConfig,
        lm: Any,
        tok: Any,
        heads: Any,
        lexical: Any,
        meta: dict[str, Any],
        device: str,
        model_version: str,
        adapter_version: str | None,
        memory: TicketMemory | None = None,
    ) -> None:
        from models.backbone import ClassifyTokenizer

        self.cfg = cfg
        self.lm, self.tok, self.heads, self.lexical, self.meta = lm, tok, heads, lexical, meta
        self.device = device
        self.model_version = model_version
        self.adapter_version = adapter_version
        self.memory = memory
        self.adapter_name = "default"  # this Triager's named adapter on `lm` (see load_sharing)
        self.ctok = ClassifyTokenizer(tok, int(meta.get("max_tokens", 96)))
        self.specials = self.ctok.specials
        self._fields: dict[str, list[str]] = dict(meta["fields"])
        self.derived: dict[str, Any] = dict(meta.get("derived", {}))
        self._pool: ThreadPoolExecutor | None = None
        self.drafter = Drafter(
            lm,
            tok,
            device,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.draft_batch_size or cfg.batch_size,
            static=cfg.static_drafting,
            buckets=Buckets(batch=tuple(cfg.draft_batch_buckets), prompt=tuple(cfg.draft_prompt_buckets)),
            specials=self.specials,
        )

    @property
    def fields(self) -> dict[str, list[str]]:
        out = dict(self._fields)
        for name, spec in self.derived.items():
            out[name] = sorted({v for row in spec["matrix"].values() for v in row.values()})
        return out

    @property
    def vote_curves(self) -> dict[str, Any]:
        """Per field with neighbour votes, its agreement map (slope, bias) from triage.json."""
        calib = self.meta.get("calibration", {})
        return {f: c["neighbours"]["agreement"] for f, c in calib.items() if f in self._fields and "neighbours" in c}

    def known_labels(self, labels: dict[str, str]) -> dict[str, str]:
        """The labels that are in this adapter's label sets (a correction to a label it does not know cannot vote)."""
        return {f: v for f, v in labels.items() if v in self._fields.get(f, ())}

    @classmethod
    def load(cls, cfg: ModelConfig | None = None) -> Triager:
        from models.loading import load_base, network_policy, pick_device

        cfg = cfg or ModelConfig()
        network_policy(cfg)  # before transformers / peft are imported: their hub flags are read at import
        from peft import PeftModel

        from models.classifier import cpu_has_bf16

        d = adapter_io.resolve_adapter(cfg.adapter)
        meta = adapter_io.read_meta(d)
        dtype = cfg.dtype
        if dtype == "auto" and pick_device(cfg.device) == "cpu" and cpu_has_bf16():
            dtype = "bfloat16"  # measured ~4x faster than fp32 on AMX / AVX512-BF16 CPUs (bench/triage.py)
        base = cfg.base
        lm, tok, device, model_version, _ = load_base(ModelConfig(**{**cfg.__dict__, "dtype": dtype, "base": base}))
        tok.padding_side = "left"
        lm = PeftModel.from_pretrained(lm, str(d))
        lm.eval()
        heads, lexical, memory, version = _adapter_parts(d, meta, lm.config.hidden_size, device)
        return cls(cfg, lm, tok, heads, lexical, meta, device, model_version, version, memory)

    @classmethod
    def load_sharing(cls, base: Triager, cfg: ModelConfig, name: str) -> Triager:
        """The adapter `cfg.adapter` on the base model `base` already holds, as another peft named adapter: the
        base weights are not loaded again (a worker swapping its live adapter between batches, or running a shadow
        adapter beside it). Each Triager activates its own adapter while it runs the model, under a lock the
        Triagers on that base share. The adapter must have been trained on the same base (its triage.json says)."""
        d = adapter_io.resolve_adapter(cfg.adapter)
        meta = adapter_io.read_meta(d)
        if meta.get("base_model") not in (None, base.cfg.base):
            raise adapter_io.AdapterError(
                f"{d}: trained on {meta.get('base_model')!r}, but the loaded base is {base.cfg.base!r}"
            )
        key = adapter_key(name)
        shared = _shared(base.lm)
        with shared.lock:
            if key in base.lm.peft_config:
                raise adapter_io.AdapterError(f"an adapter named {key!r} is already loaded on this base")
            base.lm.load_adapter(str(d), adapter_name=key)
            base.lm.eval()
        heads, lexical, memory, version = _adapter_parts(d, meta, base.lm.config.hidden_size, base.device)
        cfg = ModelConfig(**{**cfg.__dict__, "base": base.cfg.base})
        out = cls(cfg, base.lm, base.tok, heads, lexical, meta, base.device, base.model_version, version, memory)
        out.adapter_name = key
        return out

    @contextmanager
    def using(self) -> Iterator[None]:
        """Hold the base model with this Triager's adapter active (Triagers sharing a base take turns)."""
        shared = _shared(self.lm)
        with shared.lock:
            if shared.active != self.adapter_name:
                self.lm.set_adapter(self.adapter_name)
                shared.active = self.adapter_name
            yield

    def unload(self) -> None:
        """Remove this Triager's adapter from a base other Triagers still use (the old one after a swap); a no-op
        for the last adapter on its base (the base goes when nothing references it)."""
        shared = _shared(self.lm)
        with shared.lock:
            names = list(getattr(self.lm, "peft_config", {}))
            if self.adapter_name not in names or len(names) < 2:
                return
            if shared.active == self.adapter_name:
                other = next(n for n in names if n != self.adapter_name)
                self.lm.set_adapter(other)
                shared.active = other
            self.lm.delete_adapter(self.adapter_name)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    # ---------------------------------------------------------------- classification
    def classify_components(self, texts: Sequence[str]) -> dict[str, FieldScores]:
        """Per field: every ensemble member's log-probabilities, their weights and the calibration on top. The
        partner's and the neighbour votes' log-probs are returned whenever the adapter has them; each counts in
        the ensemble only with a weight > 0.

        The CPU members (lexical partner, neighbour votes) run in a helper thread while this one runs the LLM: on a
        GPU the forward pass waits for the device with the GIL released, and on a CPU the members' Python and
        sparse work fills what torch's threads leave."""
        from models.classifier import logits_for

        side = self._side_pool().submit(self._cpu_members, texts)
        try:
            with self.using():
                logits = logits_for(self.lm, self.heads, self.ctok, texts, self.cfg.batch_size, self.device, False)
        finally:
            lex, votes = side.result()
        calib = self.meta.get("calibration", {})
        out: dict[str, FieldScores] = {}
        for f, labels in self._fields.items():
            llm_lp = log_softmax(logits[f].numpy().astype(np.float64))
            cal = calib.get(f, {})
            a_t = float(cal.get("llm_temperature_weight", 1.0))
            lex_lp = align(lex[f], self.lexical.classes[f], labels) if f in lex else None  # type: ignore[union-attr]
            b = float(cal.get("lexical_weight", 0.0)) if lex_lp is not None else 0.0
            g = float(cal.get("neighbour_weight", 0.0)) if f in votes else 0.0
            # without a partner or votes: the LLM's own temperature
            a = float(cal.get("llm_weight", 1.0)) if b > 0 or g > 0 else a_t
            out[f] = FieldScores(llm_lp, lex_lp, votes.get(f), (a, b, g), a_t, cal.get("top_label"))
        return out

    def _cpu_members(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The lexical partner's and the neighbour votes' log-probabilities per field."""
        lex = self.lexical.logprobs(texts) if self.lexical is not None else {}
        return lex, neighbours.member(self.memory, texts, self._fields, self.vote_curves)

    def _side_pool(self) -> ThreadPoolExecutor:
        """One helper thread per Triager, created on first use (after any fork)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu-members")
        return self._pool

    def classify_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities per field, columns in `self.fields[field]` order (before derived fields)."""
        return {f: scores.probs() for f, scores in self.classify_components(texts).items()}

    def remember(
        self, tickets: Sequence[TicketInput], labels: Sequence[dict[str, str]], replies: Sequence[str | None]
    ) -> int:
        """Add reviewed tickets (their final labels and the reply that was sent) to the ticket memory, so neighbour
        votes and reply suggestions use them from the next prediction on, without retraining; a ticket already held
        (same id) is replaced. Labels outside the adapter's label sets are dropped. Returns the rows added or
        replaced: 0 when the adapter has no ticket memory (trained with --no-ticket-memory: nothing is kept)."""
        if self.memory is None or not tickets:
            return 0
        return self.memory.extend(
            [str(t.id) for t in tickets],
            [self.prepare(t)[0] for t in tickets],
            list(replies),
            [self.known_labels(labs) for labs in labels],
            max_rows=self.cfg.memory_max_rows,
        )

    def forget(self, ids: Sequence[str]) -> int:
        """Remove these ticket ids from the ticket memory (erasure); returns the rows removed (0 without a memory)."""
        return self.memory.forget(ids) if self.memory is not None else 0

    # ---------------------------------------------------------------- replies
    def suggest_replies(
        self, texts: Sequence[str], languages: Sequence[str | None], evidence: Sequence[str | None] | None = None
    ) -> list[tuple[str, str]]:
        """(reply, source) per ticket as `reply_mode` says: a past reply ("history:<id>") or a draft ("model")."""
        return [(r.text, r.source) for r in self.replies(texts, languages, evidence)]

    def replies(
        self, texts: Sequence[str], languages: Sequence[str | None], evidence: Sequence[str | None] | None = None
    ) -> list[Reply]:
        """A reply per ticket as `reply_mode` says, with the texts it was built from (`grounds`: the past reply it
        reuses or was shown as an example); `evidence` (quoted knowledge-base passages) goes into LLM drafts."""
        matches = (
            self.memory.nearest(texts, languages, min_similarity=self.cfg.reply_min_similarity)
            if self.memory is not None
            else [None] * len(texts)
        )
        evidence = list(evidence) if evidence is not None else [None] * len(texts)
        if self.cfg.reply_mode == "generate":
            examples = [m.reply if m else None for m in matches]
            with self.using():
                drafted = self.drafter.draft(texts, languages, examples, evidence)
            return [Reply(r, "model", [e] if e else []) for r, e in zip(drafted, examples, strict=True)]
        out: list[Reply | None] = [
            Reply(prompts.clean_reply(m.reply, t), f"history:{m.source_id}", [m.reply]) if m else None
            for m, t in zip(matches, texts, strict=True)
        ]
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            with self.using():
                drafted = self.drafter.draft(
                    [texts[i] for i in todo], [languages[i] for i in todo], None, [evidence[i] for i in todo]
                )
            for i, r in zip(todo, drafted, strict=True):
                out[i] = Reply(r, "model", [])
        return [o for o in out if o is not None]

    def draft_replies(
        self, texts: Sequence[str], languages: Sequence[str | None], examples: Sequence[str | None] | None = None
    ) -> list[str]:
        """LLM drafts, batched (models/drafting.py); `examples` are past replies shown in the prompt."""
        with self.using():
            return self.drafter.draft(texts, languages, examples)

    # ---------------------------------------------------------------- the API
    def prepare(self, t: TicketInput) -> tuple[str, bool, list[str]]:
        flags: list[str] = []
        limit = self.cfg.max_input_chars
        subject, body = (t.subject or "")[: limit * 2], (t.body or "")[: limit * 2]
        raw_long = len(t.subject or "") > limit or len(t.body or "") > limit
        text = prompts.ticket_text(prompts.sanitize(subject, self.specials), prompts.sanitize(body, self.specials))
        text, cut = prompts.truncate_chars(text, limit)
        truncated = cut or raw_long
        if truncated:
            flags.append("truncated")
        if not text.strip():
            flags.append("empty")
        if not (t.subject or "").strip():
            flags.append("no_subject")
        return text, truncated, flags

    def classify(self, tickets: Sequence[TicketInput]) -> list[Prediction]:
        """Labels with calibrated probabilities, the language and the input flags; no reply (see `suggest`)."""
        if not tickets:
            return []
        prepared = [self.prepare(t) for t in tickets]
        texts = [p[0] for p in prepared]
        t0 = time.perf_counter()
        probs = self.classify_texts(texts)
        t_cls = (time.perf_counter() - t0) / len(tickets)
        preds = []
        for i, t in enumerate(tickets):
            dists: dict[str, dict[str, float]] = {}
            for f, names in self._fields.items():
                dists[f] = {n: float(v) for n, v in zip(names, probs[f][i], strict=True)}
            for f, spec in self.derived.items():
                if all(src in dists for src in spec["from"]):
                    dists[f] = derive_matrix(dists, spec)
            labels = {}
            for f, dist in dists.items():
                best = max(dist, key=lambda k: dist[k])
                labels[f] = LabelScore(label=best, confidence=dist[best], probabilities=dist)
            preds.append(
                Prediction(
                    id=str(t.id),
                    labels=labels,
                    language=lang.detect(texts[i]),
                    truncated=prepared[i][1],
                    flags=list(prepared[i][2]),
                    timings={"classify_s": t_cls},
                )
            )
        return preds

    def suggest(self, tickets: Sequence[TicketInput], evidence: Sequence[str | None] | None = None) -> list[Suggested]:
        """A reply per ticket as `reply_mode` says (None for an empty ticket), with its source and flags; `evidence`
        per ticket is quoted knowledge-base passages for an LLM draft (None: none above the threshold)."""
        prepared = [self.prepare(t) for t in tickets]
        texts = [p[0] for p in prepared]
        languages = [lang.detect(tx) for tx in texts]
        out = [Suggested(None, None, languages[i]) for i in range(len(tickets))]
        todo = [i for i, p in enumerate(prepared) if "empty" not in p[2]]
        if not todo:
            return out
        t0 = time.perf_counter()
        given = list(evidence) if evidence is not None else [None] * len(tickets)
        made = self.replies([texts[i] for i in todo], [languages[i] for i in todo], [given[i] for i in todo])
        per_ticket = (time.perf_counter() - t0) / len(todo)
        for i, reply in zip(todo, made, strict=True):
            flags = [f for f in [draft_language_flag(languages[i], reply.text)] if f]
            if reply.source.startswith("history:"):
                flags.append("reply_from_history")
            out[i] = Suggested(reply.text, reply.source, languages[i], flags, per_ticket, reply.grounds)
        return out

    def needs_llm(self, tickets: Sequence[TicketInput]) -> list[bool]:
        """Whether each ticket's suggestion will be an LLM draft (generate mode, or no past reply close enough), not
        a past reply: the draft stage stores the past replies first, so a slow draft never holds them back."""
        prepared = [self.prepare(t) for t in tickets]
        live = ["empty" not in p[2] for p in prepared]
        if self.cfg.reply_mode == "generate" or self.memory is None:
            return live
        texts = [p[0] for p in prepared]
        matches = self.memory.nearest(
            texts, [lang.detect(tx) for tx in texts], min_similarity=self.cfg.reply_min_similarity
        )
        return [ok and m is None for ok, m in zip(live, matches, strict=True)]

    def predict(self, tickets: Sequence[TicketInput], draft_replies: bool = True) -> list[Prediction]:
        """`classify`, and with `draft_replies` the `suggest` of every ticket merged in (one call, offline use)."""
        preds = self.classify(tickets)
        if draft_replies and preds:
            for pred, sug in zip(preds, self.suggest(tickets), strict=True):
                pred.reply, pred.reply_source = sug.reply, sug.source
                pred.flags += sug.flags
                pred.timings["draft_s"] = sug.seconds if sug.reply else 0.0
        else:
            for pred in preds:
                pred.timings["draft_s"] = 0.0
        return preds


def _adapter_parts(d: Path, meta: dict[str, Any], hidden: int, device: str) -> tuple[Any, Any, Any, str]:
    """An adapter directory's label heads, lexical partner, ticket memory and version (`<dir>@<heads hash>`)."""
    from safetensors.torch import load_file

    from models.classifier import Heads
    from models.lexical import LexicalModel

    heads = Heads(hidden, meta["fields"])
    heads.load_state_dict(load_file(str(d / adapter_io.HEADS)))
    heads.to(device).eval()
    lexical = LexicalModel.load(d) if (d / "lexical.json").exists() else None
    h = hashlib.sha256((d / adapter_io.HEADS).read_bytes()).hexdigest()[:12]
    return heads, lexical, TicketMemory.load(d), f"{d.name}@{h}"


def adapter_dir(cfg: ModelConfig) -> Path:
    return adapter_io.resolve_adapter(cfg.adapter)
