"""Sustained signed-webhook load against the real API process while workers are busy (RELIABILITY T1).

    python bench/load.py                 # per API process count (1, then 2): 10 s saturation probe, 60 s at
                                         # half of it, a 2,000-in-10-s burst; then one table side by side
    python bench/load.py --full          # 5 minutes at half of saturation (the T1 row)
    python bench/load.py --rate 50       # a fixed rate instead of half of the measured saturation

The stack is private (PostgreSQL and Redis processes on free ports, the fake Jira), the API is `itsm-triage
serve`, workers are `itsm-triage worker` with the fake model (a fixed per-batch latency keeps them busy). The load
generator runs in another process on loopback; every request is correctly signed and has a unique delivery id.
Prints ack latency p50/p95/p99/max, errors, the API's CPU and RSS growth, and checks stored == acknowledged.
Goal: p99 <= 50 ms at half of saturation, zero non-2xx, RSS growth < 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.harness import Stack, jira_ticket, tree_stat  # noqa: E402

WORKER_ENV = {
    "ITSM_MODEL__FAKE_LATENCY_MS": "50",
    "ITSM_MODEL__BATCH_WAIT_MS": "20",
    "ITSM_WORKER__STUCK_GRACE_S": "60",
}


def _requests(base: int) -> Iterator[bytes]:
    """Endless unique signed Jira deliveries as raw HTTP/1.1 requests (built lazily in the load process)."""
    from bench.loadgen import build_request

    n = base
    while True:
        d = jira_ticket(n, delivery_id=f"load-{n}")
        yield build_request(d.path, d.body, d.headers)
        n += 1


def _load_process(kind: str, port: int, base: int, seconds: float, rate: float, conns: int, out: Any) -> None:
    """Child process: run one phase and send back the raw figures."""
    from bench import loadgen

    reqs: Any = _requests(base)  # an iterator: loadgen cycles it lazily, so every request is unique
    if kind == "closed":
        res = asyncio.run(loadgen.closed_loop(port, reqs, connections=conns, duration_s=seconds))
    else:
        res = asyncio.run(loadgen.open_loop(port, reqs, rate=rate, duration_s=seconds, connections=conns))
    out.put({"latencies": res.latencies, "statuses": res.statuses, "elapsed": res.elapsed})


def run_phase(kind: str, port: int, base: int, *, seconds: float, rate: float = 0.0, conns: int = 32) -> Any:
    """Run a load phase in a separate process (so the generator's CPU is not the API's) and collect it."""
    from bench.loadgen import Result

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=(kind, port, base, seconds, rate, conns, out))
    proc.start()
    data = out.get(timeout=seconds + 300)
    proc.join(timeout=30)
    return Result(latencies=data["latencies"], statuses=data["statuses"], elapsed=data["elapsed"])


def burst_phase(st: Stack, port: int, count: int, conns: int) -> dict[str, Any]:
    """T2: `count` deliveries within 10 s, then wait for the backlog to drain (bounded at 15 minutes)."""
    import threading

    assert st.ledger is not None
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_stat(st.apis[0].pid)[1])
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    res = run_phase("open", port, 4_000_000, seconds=10.0, rate=count / 10.0, conns=conns)
    stop.set()
    sampler.join()
    started = time.monotonic()
    pending = "SELECT count(*) FROM inbound_event WHERE status IN ('received', 'queued', 'processing')"
    while time.monotonic() - started < 900 and int(st.ledger.scalar(pending) or 0) > 0:
        time.sleep(1.0)
    stored = int(st.ledger.scalar("SELECT count(*) FROM inbound_event WHERE delivery_id LIKE 'load-4%'") or 0)
    return {
        "line": res.line(f"{count} in 10 s"),
        "max_ms": max(res.latencies) * 1000 if res.latencies else 0.0,
        "drain_s": time.monotonic() - started,
        "stored": stored,
        "acked": sum(n for code, n in res.statuses.items() if 200 <= code < 300),
        "peak_rss_mib": peak[0] / 1024,
    }


def measure(args: argparse.Namespace, processes: int, seconds: float) -> dict[str, Any]:
    """One fresh stack with `processes` API processes: saturation, sustained half-saturation load, burst."""
    print(f"--- API processes {processes}")
    with Stack(env=WORKER_ENV) as st:
        api = st.api(ITSM_API__PROCESSES=str(processes))
        for _ in range(args.workers):
            st.worker()
        sat = run_phase("closed", api.port, 1_000_000, seconds=10.0, conns=args.connections)
        print(sat.line("saturation (closed loop)"))
        rate = args.rate or max(1.0, sat.rps / 2)
        warm = run_phase("open", api.port, 2_000_000, seconds=5.0, rate=rate, conns=args.connections)
        print(warm.line(f"warm-up {rate:.0f} req/s"))
        cpu0, rss0 = tree_stat(api.pid)
        t0 = time.monotonic()
        res = run_phase("open", api.port, 3_000_000, seconds=seconds, rate=rate, conns=args.connections)
        cpu1, rss1 = tree_stat(api.pid)
        wall = time.monotonic() - t0
        assert st.ledger is not None
        stored = int(st.ledger.scalar("SELECT count(*) FROM inbound_event WHERE delivery_id LIKE 'load-3%'") or 0)
        backlog = st.ledger.snapshot().events
        burst = burst_phase(st, api.port, args.burst, args.connections) if args.burst else None
    acked = sum(n for code, n in res.statuses.items() if 200 <= code < 300)
    growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
    print(res.line(f"sustained {rate:.0f} req/s {seconds:.0f} s"))
    print(
        f"  ack latency p50 {res.pct(50):.1f} ms  p95 {res.pct(95):.1f} ms  p99 {res.pct(99):.1f} ms  "
        f"max {max(res.latencies) * 1000 if res.latencies else 0:.1f} ms; statuses {dict(sorted(res.statuses.items()))}"
    )
    print(f"  API CPU {(cpu1 - cpu0) / wall * 100:.0f} % of one core; RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
    print(f"  stored vs acked {stored} / {acked}; events by status {dict(backlog)}")
    if burst is not None:
        print(
            f"  burst (T2): {burst['line']}; drained in {burst['drain_s']:.0f} s; "
            f"peak RSS {burst['peak_rss_mib']:.1f} MiB"
        )
    return {
        "processes": processes,
        "saturation": sat.rps,
        "rate": res.rps,
        "p50": res.pct(50),
        "p99": res.pct(99),
        "non_2xx": res.non_2xx,
        "growth": growth,
        "lost": max(0, acked - stored),
        "burst_max_ms": burst["max_ms"] if burst else None,
        "burst_lost": (burst["acked"] - burst["stored"]) if burst else 0,
    }


def main() -> None:
    """Per API process count: saturation probe, sustained load at half of it, burst; then one comparison table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="sustain for 300 s (the T1 row)")
    parser.add_argument("--seconds", type=float, default=None, help="sustained phase length (default 60, --full 300)")
    parser.add_argument("--rate", type=float, default=None, help="fixed rate instead of half of saturation")
    parser.add_argument("--workers", type=int, default=1, help="worker processes kept busy during the load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--api-processes", default="1,2", help="ITSM_API__PROCESSES values measured back to back (e.g. 1,2)"
    )
    parser.add_argument("--burst", type=int, default=2000, help="T2: deliveries sent within 10 s (0 = skip)")
    args = parser.parse_args()
    seconds = args.seconds or (300.0 if args.full else 60.0)
    counts = [int(n) for n in str(args.api_processes).split(",") if n.strip()]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"commit {commit.strip()}  cores {os.cpu_count()}  workers {args.workers} (fake model, 50 ms per batch)")
    rows = [measure(args, n, seconds) for n in counts]
    print()
    print(
        "API procs | saturation req/s | sustained req/s | p50 ms | p99 ms | non-2xx | RSS growth | lost "
        "| burst max ack ms"
    )
    for r in rows:
        burst = f"{r['burst_max_ms']:.0f}" if r["burst_max_ms"] is not None else "-"
        print(
            f"{r['processes']:9} | {r['saturation']:16.0f} | {r['rate']:15.1f} | {r['p50']:6.1f} | {r['p99']:6.1f} | "
            f"{r['non_2xx']:7} | {r['growth']:+9.1f}% | {r['lost'] + r['burst_lost']:4} | {burst}"
        )
    base = rows[0]
    for r in rows[1:]:
        print(
            f"{r['processes']} vs {base['processes']} API processes, same run: saturation x"
            f"{r['saturation'] / base['saturation']:.2f}, p99 x{r['p99'] / base['p99']:.2f}"
        )
    print("goals: p99 <= 50 ms at half of saturation, 0 non-2xx, RSS growth < 10 %, 0 lost; burst max ack < 2000 ms")


if __name__ == "__main__":
    main()
