"""Candidate vs live adapter on the same held-out tickets, as each would serve: per field both adapters' macro-F1,
accuracy and ECE, the paired bootstrap of the candidate's macro-F1 margin and of its ECE difference at a chosen
confidence (the resampling of models/calibration.py's bootstrap_margin, whose 95% report is included too), the LLM
head alone, each label the live adapter does not know, and the suggested replies' chrF against the replies agents
sent. Measurement only: what passes is the caller's policy (service/learning/gate.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import adapter as adapter_io
from models.calibration import bootstrap_margin, ece, weighted_macro_f1
from models.config import ModelConfig
from models.data import Ticket, parse_tickets, read_rows
from models.metrics_text import chrf


def load_rows(path: str | Path, fields: Sequence[str]) -> list[Ticket]:
    """Tickets of a JSONL file with whichever of `fields` it has (none required)."""
    rows = read_rows(path)
    present = [f for f in fields if any(f in r for r in rows)]
    tickets, _ = parse_tickets(rows, present, require_labels=False, source=str(path))
    return tickets


@dataclass
class Scored:
    """One adapter's answers on the held-out tickets, as it would serve: per field its label set, calibrated
    probabilities and LLM head alone; its suggested replies on the reply sample; what it took."""

    name: str
    labels: dict[str, list[str]]
    probs: dict[str, np.ndarray]
    llm: dict[str, np.ndarray]
    replies: list[str] | None
    remembered: int
    seconds: float


def reply_sample(tickets: Sequence[Ticket], sample: int, seed: int) -> list[int]:
    """The held-out tickets whose suggested replies are scored: up to `sample` of those with a sent reply."""
    with_ref = [i for i, t in enumerate(tickets) if t.reply]
    if sample <= 0 or not with_ref:
        return []
    return sorted(np.random.default_rng(seed).choice(with_ref, min(sample, len(with_ref)), replace=False).tolist())


def score(tri: Any, tickets: Sequence[Ticket], pick: Sequence[int], name: str, started: float) -> Scored:
    """A loaded Triager's answers on `tickets` (suggested replies on the tickets at `pick`)."""
    from models.inference import TicketInput

    inputs = [TicketInput(t.id, t.subject, t.body) for t in tickets]
    comps = tri.classify_components([tri.prepare(t)[0] for t in inputs])
    replies = [s.reply or "" for s in tri.suggest([inputs[i] for i in pick])] if pick else None
    return Scored(
        name,
        {f: list(tri.fields[f]) for f in comps},
        {f: c.probs() for f, c in comps.items()},
        {f: c.llm_calibrated() for f, c in comps.items()},
        replies,
        len(tri.memory) if tri.memory is not None else 0,
        time.monotonic() - started,
    )


def _load_live(
    live: str | Path, mcfg: ModelConfig, remembered: str | Path | None, forget: Sequence[str]
) -> tuple[Any, list[str]]:
    """The live adapter as the workers serve it: the reviewed tickets in `remembered` added to its ticket memory
    (what the workers' memory sync gave it) and the erased ids in `forget` removed."""
    from models.inference import TicketInput, Triager

    live_t = Triager.load(ModelConfig(**{**mcfg.__dict__, "adapter": str(live)}))
    fields = list(live_t.fields)
    if forget:
        live_t.forget(list(forget))
    if remembered:
        known = load_rows(remembered, fields)
        live_t.remember(
            [TicketInput(t.id, t.subject, t.body) for t in known], [t.labels for t in known], [t.reply for t in known]
        )
    return live_t, fields


def score_live(
    live: str | Path,
    holdout: str | Path,
    mcfg: ModelConfig,
    *,
    remembered: str | Path | None = None,
    forget: Sequence[str] = (),
    reply_sample_size: int = 50,
    seed: int = 1,
    name: str | None = None,
) -> Scored:
    """The live adapter's side of a comparison on its own, before a candidate exists: a retrain scores it first,
    so the time the candidate's side will take is measured rather than guessed when the training budget is set
    (the live adapter's answers do not depend on the candidate)."""
    t0 = time.monotonic()
    live_t, fields = _load_live(live, mcfg, remembered, forget)
    tickets = load_rows(holdout, fields)
    pick = reply_sample(tickets, reply_sample_size, seed)
    return score(live_t, tickets, pick, name or str(live_t.adapter_version), t0)


def compare(
    candidate: str | Path,
    live: str | Path,
    holdout: str | Path,
    mcfg: ModelConfig,
    *,
    remembered: str | Path | None = None,
    forget: Sequence[str] = (),
    confidence: float = 0.95,
    reply_sample: int = 50,
    n_boot: int = 2000,
    seed: int = 1,
    names: tuple[str, str] | None = None,
    live_scored: Scored | None = None,
    log_fn: Any = print,
) -> dict[str, Any]:
    """Both adapters on the held-out tickets. The live adapter serves with the reviewed tickets in `remembered`
    added to its ticket memory and the erased ids in `forget` removed (or comes as `live_scored`, scored earlier
    with the same tickets, memory and reply sample); the candidate as trained (those reviews are its training
    data). `names` = (candidate, live) for the report."""
    from models.inference import Triager

    t0 = time.monotonic()
    cand_cfg = ModelConfig(**{**mcfg.__dict__, "adapter": str(candidate)})
    if live_scored is None:
        live_t, live_fields = _load_live(live, mcfg, remembered, forget)
        try:
            cand_t = Triager.load_sharing(live_t, cand_cfg, "candidate")
        except adapter_io.AdapterError:  # trained on another base: load that one too
            cand_t = Triager.load(cand_cfg)
    else:
        cand_t, live_fields = Triager.load(cand_cfg), list(live_scored.labels)
    fields = sorted(set(live_fields) | set(cand_t.fields))
    tickets = load_rows(holdout, fields)
    pick = _sample_for(tickets, reply_sample, seed, live_scored)
    if live_scored is None:
        live_scored = score(live_t, tickets, pick, names[1] if names else str(live_t.adapter_version), t0)
    cand = score(cand_t, tickets, pick, names[0] if names else str(cand_t.adapter_version), time.monotonic())
    out = report(cand, live_scored, tickets, pick, confidence=confidence, n_boot=n_boot, seed=seed)
    out["seconds"] = round(live_scored.seconds + cand.seconds, 1)
    _print(out, log_fn)
    cand_t.unload()
    return out


def _sample_for(tickets: Sequence[Ticket], sample: int, seed: int, live_scored: Scored | None) -> list[int]:
    """The reply sample; the one the live side was scored on when it came scored (same tickets, same seed)."""
    pick = reply_sample(tickets, sample, seed)
    if live_scored is not None and len(live_scored.replies or []) != len(pick):
        raise ValueError("live_scored was scored on another reply sample: score both sides with the same settings")
    return pick


def report(
    cand: Scored,
    live: Scored,
    tickets: Sequence[Ticket],
    pick: Sequence[int],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 1,
) -> dict[str, Any]:
    """The comparison of two scored adapters on the same tickets: per field and for the replies."""
    out: dict[str, Any] = {
        "n": len(tickets),
        "confidence": confidence,
        "resamples": n_boot,
        "live_adapter": live.name,
        "candidate_adapter": cand.name,
        "live_remembered": live.remembered,
        "seconds_live": round(live.seconds, 1),
        "seconds_candidate": round(cand.seconds, 1),
        "fields": {},
    }
    for f in sorted(set(live.labels) | set(cand.labels)):
        if f not in live.probs or f not in cand.probs:
            continue
        keep = [i for i, t in enumerate(tickets) if t.labels.get(f)]
        if not keep:
            continue
        truth = [tickets[i].labels[f] for i in keep]
        union = sorted(set(live.labels[f]) | set(cand.labels[f]) | set(truth))
        p_c = _columns(cand.probs[f][keep], cand.labels[f], union)
        p_l = _columns(live.probs[f][keep], live.labels[f], union)
        llm_c = _columns(cand.llm[f][keep], cand.labels[f], union)
        llm_l = _columns(live.llm[f][keep], live.labels[f], union)
        y = np.array([union.index(v) for v in truth])
        # macro-F1 over the labels that occur: in the tickets or in either adapter's answers (dropping the others
        # changes no argmax and no top probability)
        used = sorted({*y.tolist(), *p_c.argmax(1).tolist(), *p_l.argmax(1).tolist()})
        remap = {c: i for i, c in enumerate(used)}
        yr = np.array([remap[c] for c in y])
        pc, pl = _renorm(p_c[:, used]), _renorm(p_l[:, used])
        new_labels = [lab for lab in cand.labels[f] if lab not in live.labels[f]]
        out["fields"][f] = {
            "n": len(keep),
            "labels": [union[c] for c in used],
            "candidate": _summary(pc, yr),
            "live": _summary(pl, yr),
            "candidate_llm_only": _summary(_renorm(llm_c[:, used]), yr),
            "live_llm_only": _summary(_renorm(llm_l[:, used]), yr),
            **_paired(pc, pl, yr, confidence, n_boot, seed),
            "bootstrap_95": bootstrap_margin(pc, pl, yr, n_boot=n_boot, seed=seed),
            "new_labels": {lab: _recall(lab, truth, union, p_c, llm_c) for lab in new_labels},
            "unknown_to_live": sorted({v for v in truth if v not in live.labels[f]}),
            "unknown_to_candidate": sorted({v for v in truth if v not in cand.labels[f]}),
        }
    if pick and cand.replies is not None and live.replies is not None:
        out["replies"] = _replies(cand.replies, live.replies, [tickets[i].reply or "" for i in pick], confidence,
                                  n_boot, seed)  # fmt: skip
    return out


def _columns(p: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """Probabilities in `want`'s label order; a label the adapter does not know gets 0."""
    out = np.zeros((p.shape[0], len(want)))
    pos = {lab: i for i, lab in enumerate(want)}
    for j, lab in enumerate(have):
        out[:, pos[lab]] = p[:, j]
    return out


def _renorm(p: np.ndarray) -> np.ndarray:
    return np.asarray(p / np.clip(p.sum(1, keepdims=True), 1e-12, None))


def _summary(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    k = p.shape[1]
    return {
        "macro_f1": float(weighted_macro_f1(p.argmax(1), y, k, np.ones((1, len(y))))[0]),
        "accuracy": float((p.argmax(1) == y).mean()),
        "ece": ece(p, y),
    }


def _paired(
    p: np.ndarray, base: np.ndarray, y: np.ndarray, confidence: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """The candidate's macro-F1 margin and ECE difference with one-sided bounds at `confidence`: the margin's lower
    bound (better when > 0) and upper bound (worse when < 0), the ECE difference's lower bound (calibration worse
    when above the allowed increase). Same resamples as bootstrap_margin (same seed)."""
    n, k = p.shape
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    counts = np.zeros((n_boot + 1, n))
    counts[0] = 1.0
    np.add.at(counts, (np.arange(1, n_boot + 1)[:, None], idx), 1.0)
    margins = weighted_macro_f1(p.argmax(1), y, k, counts) - weighted_macro_f1(base.argmax(1), y, k, counts)
    ece_diff = np.array([ece(p[i], y[i]) - ece(base[i], y[i]) for i in idx])
    lo, hi = 1 - confidence, confidence
    return {
        "macro_f1_margin": float(margins[0]),
        "macro_f1_margin_lower": float(np.quantile(margins[1:], lo)),
        "macro_f1_margin_upper": float(np.quantile(margins[1:], hi)),
        "ece_difference": float(ece(p, y) - ece(base, y)),
        "ece_difference_lower": float(np.quantile(ece_diff, lo)),
        "ece_difference_upper": float(np.quantile(ece_diff, hi)),
    }


def _recall(label: str, truth: Sequence[str], union: Sequence[str], p: np.ndarray, llm: np.ndarray) -> dict[str, Any]:
    """How many held-out tickets of a label the candidate gets right, with its ensemble and with its LLM head alone
    (the adapter's own weights, not the ticket memory's votes or the lexical partner)."""
    rows = [i for i, v in enumerate(truth) if v == label]
    j = list(union).index(label)
    return {
        "n": len(rows),
        "candidate": int(sum(int(p[i].argmax() == j) for i in rows)),
        "candidate_llm_only": int(sum(int(llm[i].argmax() == j) for i in rows)),
    }


def _replies(
    cand: Sequence[str], live: Sequence[str], refs: Sequence[str], confidence: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """chrF of each adapter's suggested reply against the reply an agent sent, with the paired bootstrap."""
    scores = {
        name: np.array([chrf(s, r) for s, r in zip(suggested, refs, strict=True)])
        for name, suggested in (("live", live), ("candidate", cand))
    }
    diff = scores["candidate"] - scores["live"]
    boot = diff[np.random.default_rng(seed).integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    return {
        "n": len(refs),
        "candidate_chrf": float(scores["candidate"].mean()),
        "live_chrf": float(scores["live"].mean()),
        "chrf_margin": float(diff.mean()),
        "chrf_margin_lower": float(np.quantile(boot, 1 - confidence)),
        "chrf_margin_upper": float(np.quantile(boot, confidence)),
    }


def _print(r: dict[str, Any], log_fn: Any) -> None:
    conf = f"{r['confidence']:.0%}"
    log_fn(f"held out {r['n']} tickets; {r['candidate_adapter']} vs {r['live_adapter']} (bounds at {conf})")
    for f, m in r["fields"].items():
        c, lv = m["candidate"], m["live"]
        log_fn(
            f"{f:<10} macro-F1 {lv['macro_f1']:.3f} -> {c['macro_f1']:.3f} ({m['macro_f1_margin']:+.3f}, bounds "
            f"{m['macro_f1_margin_lower']:+.3f} … {m['macro_f1_margin_upper']:+.3f}); ECE {lv['ece']:.3f} -> "
            f"{c['ece']:.3f}; LLM head alone {m['live_llm_only']['macro_f1']:.3f} -> "
            f"{m['candidate_llm_only']['macro_f1']:.3f}"
        )
        for lab, nl in m["new_labels"].items():
            log_fn(
                f"{f:<10} new label {lab!r}: {nl['candidate']}/{nl['n']} right "
                f"({nl['candidate_llm_only']}/{nl['n']} by the LLM head alone)"
            )
    rep = r.get("replies") or {}
    if rep.get("n"):
        log_fn(
            f"replies    chrF {rep['live_chrf']:.1f} -> {rep['candidate_chrf']:.1f} ({rep['chrf_margin']:+.2f}, "
            f"bounds {rep['chrf_margin_lower']:+.2f} … {rep['chrf_margin_upper']:+.2f}) on {rep['n']} sent replies"
        )
