"""Webhook ack throughput and latency of our receiver, side by side with a bare FastAPI JSON endpoint.

Both servers run as separate processes under the same uvicorn settings; this process drives signed Jira
deliveries (unique ids, pre-signed so HMAC cost stays off the client's clock) over loopback.

    python bench/ingest.py [--seconds 10] [--connections 32] [--database-url postgresql+psycopg://...]

Prints saturation req/s for both and their ratio (goal >= 0.5), then p50/p99 at half of our saturation rate
(goal p99 <= 50 ms), and checks that every acknowledged delivery was stored. Absolute numbers vary with the
machine's load; compare the ratios printed by one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import Result, build_request, closed_loop, free_port, open_loop, start_server
from service.domain.tables import InboundEvent
from service.samples import as_new_ticket, load_sample, make_delivery

SECRET = "bench-jira-secret"
REDIS_URL = "redis://127.0.0.1:6379/12"
RUN = f"bench-{os.getpid()}-{int(time.time())}"  # this run's delivery ids, so a reused database counts right


def requests(n: int) -> list[bytes]:
    """n distinct, signed jira:issue_created deliveries."""
    sample = load_sample("jira_issue_created")
    base = int(time.time() * 1000)
    out = []
    for i in range(n):
        delivery = make_delivery(as_new_ticket(sample, base + i), secret=SECRET, delivery_id=f"{RUN}-{i}")
        out.append(build_request(delivery.path, delivery.body, delivery.headers))
    return out


def main() -> None:
    """Run the comparison and print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measured phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="itsm-bench-"))
    db_url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    ours_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "ITSM_DATABASE_URL": db_url,
        "ITSM_BROKER_URL": REDIS_URL,
        "ITSM_JIRA__WEBHOOK_SECRET": SECRET,
        "ITSM_VAR_DIR": str(tmp),
    }
    exe = [sys.executable, "-m", "service.cli"]
    procs = [
        start_server([*exe, "serve", "--port", str(ours_port)], env, ours_port),
        start_server([sys.executable, str(Path(__file__).with_name("_bare_app.py")), str(bare_port)], env, bare_port),
    ]
    try:
        budget = int(args.seconds * 4000) + 2000  # more distinct deliveries than any phase can send
        reqs = requests(budget)
        half = len(reqs) // 2
        ours_reqs, sat_reqs = reqs[:half], reqs[half:]

        async def run() -> dict[str, Result]:
            out: dict[str, Result] = {}
            await closed_loop(bare_port, reqs[:200], connections=4, duration_s=1)  # warm-up both
            await closed_loop(ours_port, [build_request("/livez", b"", {})], connections=4, duration_s=1)
            out["bare saturation"] = await closed_loop(
                bare_port, reqs, connections=args.connections, duration_s=args.seconds
            )
            out["ours saturation"] = await closed_loop(
                ours_port, sat_reqs, connections=args.connections, duration_s=args.seconds
            )
            rate = out["ours saturation"].rps / 2
            out["ours @ half saturation"] = await open_loop(ours_port, ours_reqs, rate=rate, duration_s=args.seconds)
            out["bare @ same rate"] = await open_loop(bare_port, reqs, rate=rate, duration_s=args.seconds)
            return out

        results = asyncio.run(run())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(InboundEvent).where(InboundEvent.delivery_id.like(f"{RUN}-%"))  # type: ignore[attr-defined]
        ).scalar_one()
    acked = results["ours saturation"].statuses.get(202, 0) + results["ours @ half saturation"].statuses.get(202, 0)
    queued = broker.llen("triage")
    broker.flushdb()

    print(
        f"database: {db_url.split('://')[0]}  broker: redis  connections: {args.connections}  "
        f"phase: {args.seconds:g} s  cores: {os.cpu_count()}"
    )
    for label, result in results.items():
        print(result.line(label))
    ratio = results["ours saturation"].rps / results["bare saturation"].rps
    print(f"throughput ratio ours/bare: {ratio:.2f}  (goal >= 0.5)")
    print(
        f"p99 at half of our saturation ({results['ours @ half saturation'].rps:.0f} req/s): "
        f"{results['ours @ half saturation'].pct(99):.1f} ms  (goal <= 50 ms)"
    )
    print(f"acknowledged 202: {acked}  stored events: {stored}  queued triage tasks: {queued}  lost: {acked - stored}")


if __name__ == "__main__":
    main()
