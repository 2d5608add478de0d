"""Ticket-memory search cost per ticket at growing memory sizes: neighbour votes (top 10 of every row) plus the reply
search (the best same-language past reply), for batches of 64 tickets, as `Triager.predict` runs them.

Memory rows are synthetic: tickets of the shipped adapter's memory with 30% of their words replaced by words drawn
from the same tickets (same term statistics, new near-duplicates), so any size can be built. Queries are other such
tickets. Prints exactly one line per size:

    memory ROWS rows: X.XX ms/ticket

`--recall` also prints, per size, how often the pruned index finds the exact top-10 (computed by scoring every row)
and the time of that exhaustive search, side by side.

    python bench/memory.py [--sizes 5000,50000,200000] [--batch 64] [--batches 5] [--recall]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.adapter import DEFAULT_ADAPTER  # noqa: E402
from models.ticket_memory import FILE, TicketMemory  # noqa: E402


def base_rows() -> list[dict]:
    with gzip.open(DEFAULT_ADAPTER / FILE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def synthetic(base: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n rows like the base rows: 30% of each ticket's words replaced by words of other tickets."""
    vocab = [w for r in base for w in r["text"].split()]
    out = []
    for i in range(n):
        src = base[rng.randrange(len(base))]
        words = [w if rng.random() > 0.3 else rng.choice(vocab) for w in src["text"].split()]
        row = {**src, "id": f"s{i}", "text": " ".join(words) + f" ref{i}"}
        out.append(row)
    return out


def exhaustive_top(memory: TicketMemory, texts: list[str], k: int) -> list[list[int]]:
    """The exact top-k by the memory's own similarity: word cosine with every row, the best 10 re-ranked."""
    q = memory.query(texts)
    every = np.arange(len(memory))
    return [idx.tolist() for idx, _ in memory._rank(q, [every] * len(texts), k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,50000,200000")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--recall", action="store_true", help="also the exhaustive search's recall and time")
    args = ap.parse_args()
    rng = random.Random(7)
    base = base_rows()
    for size in [int(s) for s in args.sizes.split(",")]:
        rows = synthetic(base, size, rng)
        t0 = time.perf_counter()
        memory = TicketMemory(rows)
        build_s = time.perf_counter() - t0
        queries = [r["text"] for r in synthetic(base, args.batch * args.batches, rng)]
        languages = [r.get("language") or None for r in rows[: len(queries)]]
        memory.search(queries[:8], 10)  # warm caches
        per_batch = []
        for b in range(args.batches):
            chunk = queries[b * args.batch : (b + 1) * args.batch]
            langs = languages[b * args.batch : (b + 1) * args.batch]
            t0 = time.perf_counter()
            q = memory.query(chunk)  # one vectorisation serves both searches, as in predict
            memory.search(q, 10)
            memory.nearest(q, langs, min_similarity=0.25)
            per_batch.append((time.perf_counter() - t0) / len(chunk))
        print(f"memory {size} rows: {1000 * float(np.median(per_batch)):.2f} ms/ticket", flush=True)
        if args.recall:
            chunk = queries[: args.batch]
            t0 = time.perf_counter()
            exact = exhaustive_top(memory, chunk, 10)
            exact_s = (time.perf_counter() - t0) / len(chunk)
            found = [idx.tolist() for idx, _ in memory.search(chunk, 10)]
            recall = np.mean([len(set(f) & set(e)) / max(1, len(e)) for f, e in zip(found, exact, strict=True)])
            top1 = np.mean([f[:1] == e[:1] for f, e in zip(found, exact, strict=True)])
            print(
                f"  recall of the exhaustive top-10 {recall:.3f}, same top-1 {top1:.3f}; exhaustive search "
                f"{1000 * exact_s:.2f} ms/ticket (votes only); build {build_s:.1f} s; vectors "
                f"{memory.nbytes / 2**20:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
