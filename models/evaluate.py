"""Evaluate an adapter on labelled tickets, side by side with a TF-IDF + logistic-regression baseline trained on
the same training data; reply metrics against reference replies and a retrieval baseline; a PNG of the
reliability diagram and the coverage curve."""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models import adapter as adapter_io
from models import language as lang
from models import neighbours
from models.calibration import bootstrap_margin, classification_report
from models.config import ModelConfig
from models.data import DataError, Ticket, parse_tickets, read_rows
from models.metrics_text import chrf, longest_copied_run
from models.rows import align, texts_of, training_split


def baseline(
    train_t: Sequence[Ticket], val_t: Sequence[Ticket], fields: dict[str, list[str]], max_chars: int
) -> tuple[Any, dict[str, float] | None]:
    """The plain TF-IDF (word 1-2-grams) + LR baseline trained on the adapter's training rows; C per field chosen on
    its validation rows. Always refitted: the adapter's own lexical partner is stronger and is reported apart."""
    from models.lexical import LexicalModel

    m = LexicalModel.fit_tuned(
        texts_of(train_t, max_chars),
        {f: [t.labels.get(f) for t in train_t] for f in fields},
        texts_of(val_t, max_chars),
        {f: [t.labels.get(f) for t in val_t] for f in fields},
    )
    return m, m.C


def reviewed_votes(triager: Any, tickets: Sequence[Ticket], texts: Sequence[str], batch: int) -> dict[str, np.ndarray]:
    """The neighbour votes each ticket would get if the tickets arrived in file order, `batch` at a time, and each
    batch was reviewed (its labels and reply remembered, as the worker's memory sync does) before the next arrived.
    Only the votes change; the LLM and the lexical partner are as trained. Empty for an adapter without votes."""
    curves = triager.vote_curves
    if triager.memory is None or not curves:
        return {}
    memory = copy.deepcopy(triager.memory)  # the triager's own memory stays as shipped
    sets = {f: triager.fields[f] for f in curves}
    out = {f: np.zeros((len(texts), len(labs))) for f, labs in sets.items()}
    for s in range(0, len(texts), batch):
        votes = neighbours.member(memory, list(texts[s : s + batch]), sets, curves)
        for f in sets:
            out[f][s : s + batch] = votes[f]
        done = tickets[s : s + batch]
        memory.extend(
            [t.id for t in done],
            list(texts[s : s + batch]),
            [t.reply for t in done],
            [triager.known_labels(t.labels) for t in done],
            max_rows=triager.cfg.memory_max_rows,
        )
    return out


def retrieval_replies(train_t: Sequence[Ticket], test_texts: Sequence[str], max_chars: int) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    pool = [t for t in train_t if t.reply]
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    X = vec.fit_transform(texts_of(pool, max_chars))
    Q = vec.transform(test_texts)
    sims = (Q @ X.T).toarray()
    return [pool[int(i)].reply or "" for i in sims.argmax(1)]


def evaluate(
    adapter: str | None,
    data: str | Path,
    report: str | Path | None,
    mcfg: ModelConfig,
    train_data: str | Path | None = None,
    reply_sample: int = 200,
    draft_replies: bool = True,
    log_fn: Any = print,
    replay_reviews: int = 0,
) -> dict[str, Any]:
    from models.inference import Triager

    t0 = time.time()
    d = adapter_io.resolve_adapter(adapter)
    meta = adapter_io.read_meta(d)
    fields: dict[str, list[str]] = meta["fields"]
    # the adapter's own label columns that the file has (inferring them would drop a column with many labels on a
    # small hold-out: 30 recent tickets with 20 queues look like free text to the inference)
    rows = read_rows(data)
    present = [f for f in fields if any(f in r for r in rows)]
    test_t, _ = parse_tickets(rows, present, require_labels=False, source=str(data))
    usable = [f for f in fields if any(f in t.labels for t in test_t)]
    if not usable:
        raise DataError(f"{data}: none of the adapter's label columns {list(fields)} are present")
    train_file = Path(train_data) if train_data else None
    if train_file is None or not train_file.exists():
        raise DataError(
            "the TF-IDF baseline needs the adapter's training data: pass --train-data FILE "
            f"(the adapter was trained on {meta.get('data', {}).get('file')})"
        )
    train_t, val_t = training_split(meta, train_file)
    log_fn(f"evaluating {d.name} on {len(test_t)} tickets; baseline trained on {len(train_t)}")

    triager = Triager.load(ModelConfig(**{**mcfg.__dict__, "adapter": str(d)}))
    texts = texts_of(test_t, mcfg.max_input_chars)
    t1 = time.time()
    comps = triager.classify_components(texts)
    cls_s = time.time() - t1
    replayed = reviewed_votes(triager, test_t, texts, replay_reviews) if replay_reviews > 0 else {}
    base, C = baseline(train_t, val_t, {f: fields[f] for f in usable}, mcfg.max_input_chars)
    base_lp = base.logprobs(texts)
    partner = triager.lexical

    results: dict[str, Any] = {
        "adapter": str(d),
        "data": str(data),
        "n": len(test_t),
        "model_version": triager.model_version,
        "adapter_version": triager.adapter_version,
        "baseline": {"kind": f"tfidf {base.kind} + logistic regression", "C": C},
        "lexical_partner": None if partner is None else {"kind": partner.kind, "settings": partner.settings},
        "classify_tickets_per_s": len(test_t) / max(cls_s, 1e-9),
        "fields": {},
    }
    curves: dict[str, dict[str, Any]] = {}
    for f in usable:
        labs = fields[f]
        idx = {lab: i for i, lab in enumerate(labs)}
        keep = np.array([t.labels.get(f) in idx for t in test_t])
        unseen = Counter(t.labels[f] for t in test_t if f in t.labels and t.labels[f] not in idx)
        y = np.array([idx[t.labels[f]] for t, k in zip(test_t, keep, strict=True) if k])
        sc = comps[f]
        model_p = sc.probs()[keep]
        base_p = np.exp(align(base_lp[f], base.classes[f], labs))[keep]
        reps = {
            "model": classification_report(model_p, y, labs),
            "model_before_top_label": classification_report(sc.before_top_label()[keep], y, labs),
            "llm_only_raw": classification_report(np.exp(sc.llm)[keep], y, labs),
            "llm_only_calibrated": classification_report(sc.llm_calibrated()[keep], y, labs),
            "tfidf_baseline": classification_report(base_p, y, labs),
        }
        # each other member alone: what the LLM adds on top of them is model minus these rows
        if sc.lexical is not None:
            reps["lexical_partner"] = classification_report(np.exp(sc.lexical)[keep], y, labs)
        if sc.neighbours is not None:
            reps["neighbour_votes"] = classification_report(np.exp(sc.neighbours)[keep], y, labs)
        if f in replayed:
            reps["model_reviews_remembered"] = classification_report(
                replace(sc, neighbours=replayed[f]).probs()[keep], y, labs
            )
        results["fields"][f] = {
            **reps,
            # paired over the same tickets: whether the margin over the baseline is more than this test set's noise
            "model_vs_tfidf": bootstrap_margin(model_p, base_p, y),
            "unseen_labels_in_test": dict(unseen),
            "ensemble_weights": dict(zip(("llm", "lexical", "neighbours"), sc.weights, strict=True)),
            "top_label_calibration": sc.top_label,
        }
        curves[f] = reps

    if draft_replies:
        results["replies"] = _reply_metrics(triager, test_t, train_t + val_t, texts, reply_sample, mcfg)
    results["seconds"] = round(time.time() - t0, 1)
    _print(results, log_fn)
    if report:
        rp = Path(report)
        rp.parent.mkdir(parents=True, exist_ok=True)
        rp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        _plot(curves, rp.with_suffix(".png"))
        log_fn(f"wrote {rp} and {rp.with_suffix('.png')}")
    return results


def _reply_metrics(
    triager: Any, test_t: Sequence[Ticket], pool: Sequence[Ticket], texts: Sequence[str], sample: int, mcfg: ModelConfig
) -> dict[str, Any]:
    with_ref = [i for i, t in enumerate(test_t) if t.reply]
    if not with_ref:
        return {"n": 0}
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(with_ref, min(sample, len(with_ref)), replace=False).tolist())
    sub_texts = [texts[i] for i in pick]
    refs = [test_t[i].reply or "" for i in pick]
    langs = [lang.detect(tx) for tx in sub_texts]
    t0 = time.time()
    suggested = triager.suggest_replies(sub_texts, langs)
    gen_s = time.time() - t0
    drafts = [r for r, _ in suggested]
    # The LLM's own drafts, for comparison: a suggestion that already is one (source "model", no past reply shown
    # as an example) is reused instead of drafted again (~20 s a ticket on CPU).
    plain = triager.memory is None or triager.cfg.reply_mode != "generate"
    redo = [i for i, (_, source) in enumerate(suggested) if not (plain and source == "model")]
    llm_drafts = list(drafts)
    if redo:
        fresh = triager.draft_replies([sub_texts[i] for i in redo], [langs[i] for i in redo])
        for i, r in zip(redo, fresh, strict=True):
            llm_drafts[i] = r
    retrieved = retrieval_replies(pool, sub_texts, mcfg.max_input_chars)

    def summary(hyps: Sequence[str]) -> dict[str, Any]:
        per_lang: dict[str, list[bool]] = {}
        for h, code in zip(hyps, langs, strict=True):
            per_lang.setdefault(code or "unknown", []).append(lang.detect(h) == code)
        return {
            "chrf": float(np.mean([chrf(h, r) for h, r in zip(hyps, refs, strict=True)])),
            "language_match": float(np.mean([m for v in per_lang.values() for m in v])),
            "language_match_per_language": {k: {"n": len(v), "match": float(np.mean(v))} for k, v in per_lang.items()},
            "mean_chars": float(np.mean([len(h) for h in hyps])),
            "max_copied_words": int(max(longest_copied_run(h, tx) for h, tx in zip(hyps, sub_texts, strict=True))),
        }

    diff = np.array([chrf(h, r) - chrf(b, r) for h, b, r in zip(drafts, retrieved, refs, strict=True)])
    boot = np.random.default_rng(1).integers(0, len(diff), (2000, len(diff)))
    return {
        "n": len(pick),
        # paired: the same tickets, so the interval says whether the margin over retrieval is more than noise
        "model_minus_retrieval_chrf": {
            "mean": float(diff.mean()),
            "ci95": [float(v) for v in np.percentile(diff[boot].mean(1), [2.5, 97.5])],
        },
        "model": summary(drafts),
        "reply_mode": triager.cfg.reply_mode,
        "from_history": float(np.mean([source != "model" for _, source in suggested])),
        "llm_draft": summary(llm_drafts),
        "retrieval_baseline": summary(retrieved),
        "reference_mean_chars": float(np.mean([len(r) for r in refs])),
        "draft_seconds_per_ticket": gen_s / len(pick),
        "examples": [
            {"ticket": sub_texts[i][:300], "draft": drafts[i], "reference": refs[i][:300]}
            for i in range(min(3, len(pick)))
        ],
    }


def _print(r: dict[str, Any], log_fn: Any) -> None:
    log_fn(f"{'field':<10} {'system':<24} {'acc':>6} {'macroF1':>8} {'ECE':>6} {'P@30%':>6} {'P@60%':>6} {'P@80%':>6}")
    for f, reps in r["fields"].items():
        for k in (
            "model",
            "model_reviews_remembered",
            "model_before_top_label",
            "llm_only_raw",
            "llm_only_calibrated",
            "lexical_partner",
            "neighbour_votes",
            "tfidf_baseline",
        ):
            if k not in reps:
                continue
            m = reps[k]
            c = m["precision_at_coverage"]
            log_fn(
                f"{f:<10} {k:<24} {m['accuracy']:6.3f} {m['macro_f1']:8.3f} {m['ece']:6.3f} "
                f"{c['0.3']:6.3f} {c['0.6']:6.3f} {c['0.8']:6.3f}"
            )
    for f, reps in r["fields"].items():
        b = reps.get("model_vs_tfidf")
        if b:
            lo, hi = b["macro_f1_margin_ci95"]
            elo, ehi = b["model_ece_ci95"]
            share = b["share_of_resamples_margin_at_least"]
            log_fn(
                f"{f:<10} model - tfidf macro-F1 {b['macro_f1_margin']:+.3f} (95% CI {lo:+.3f} … {hi:+.3f}; "
                f">= 0 in {share['0']:.0%}, >= +0.03 in {share['0.03']:.0%} of {b['resamples']} resamples); "
                f"model ECE {b['model_ece']:.3f} (95% CI {elo:.3f} … {ehi:.3f})"
            )
            verdict = (
                "yes (the 95% interval of the margin is above 0)"
                if lo > 0
                else "no (worse: the 95% interval is below 0)"
                if hi < 0
                else "not shown on these tickets (the 95% interval includes 0)"
            )
            log_fn(f"{f:<10} beats the TF-IDF baseline: {verdict}")
    rep = r.get("replies")
    if rep and rep.get("n"):
        log_fn(f"replies: mode {rep['reply_mode']}, {rep['from_history']:.0%} from the ticket memory")
        for k in ("model", "llm_draft", "retrieval_baseline"):
            m = rep[k]
            log_fn(
                f"replies {k:<20} chrF {m['chrf']:.1f} language match {m['language_match']:.3f} "
                f"mean chars {m['mean_chars']:.0f} max copied words {m['max_copied_words']}"
            )
        d = rep["model_minus_retrieval_chrf"]
        log_fn(f"replies model - retrieval chrF {d['mean']:+.2f} (95% CI {d['ci95'][0]:+.2f} … {d['ci95'][1]:+.2f})")


def _plot(curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 2, figsize=(11, 4.2 * len(curves)), squeeze=False)
    for row, (f, reps) in enumerate(curves.items()):
        ax1, ax2 = axes[row]
        ax1.plot([0, 1], [0, 1], "k:", lw=1)
        for k, m in reps.items():
            rel = m["reliability"]
            ax1.plot(
                [b["confidence"] for b in rel], [b["accuracy"] for b in rel], "o-", label=f"{k} (ECE {m['ece']:.3f})"
            )
            cov = m["precision_at_coverage"]
            ax2.plot([float(c) for c in cov], list(cov.values()), "o-", label=k)
        ax1.set(title=f"{f}: reliability", xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax2.set(title=f"{f}: precision vs coverage", xlabel="coverage (most confident first)", ylabel="precision")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
