"""Tickets/s through the whole pipeline (signed webhook -> API -> broker -> batched model -> outbox -> fake Jira)
side by side with the model alone at the same batch size, in one run.

    python bench/pipeline.py [--tickets 512] [--batch-size 16] [--backend fake|hf] [--fake-latency-ms 400]
                             [--broker redis|sqlite] [--database-url postgresql+psycopg://...]

Real processes: `itsm-triage serve` (API), a triage worker (1 process, the model) and a deliver worker, a private
redis-server (or the embedded SQLite broker) and the fake Jira from tests/fakes over loopback. The model-alone
figure runs the same backend in this process over the same tickets in batches of --batch-size. Prints both rates
and their ratio (goal >= 0.8), and checks exactly one internal note per ticket.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlmodel import Session, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import start_server
from service.db import make_engine
from service.domain.schemas import CanonicalTicket
from service.domain.tables import Delivery, DeliveryStatus, Triage
from service.migrate import upgrade
from service.samples import as_new_ticket, load_sample, make_delivery
from service.settings import Settings
from tests.fakes.fake_jira import FakeJira
from tests.workers.harness import REPO, WorkerProcess, free_port, redis_server
from workers.model_backend import load_triager

SECRET = "bench-jira-secret"
DATA = Path(os.environ.get("ITSM_SHARED_DIR", REPO.parent / "shared")) / "data" / "tickets" / "train.jsonl"


def tickets(n: int, offset: int) -> list[tuple[str, str]]:
    """(subject, body) of n real-looking tickets (the shared data set, else synthetic)."""
    rows: list[tuple[str, str]] = []
    if DATA.exists():
        with DATA.open() as f:
            for i, line in enumerate(f):
                if i < offset:
                    continue
                row = json.loads(line)
                rows.append((row["subject"] or "(no subject)", row["body"] or ""))
                if len(rows) == n:
                    break
    while len(rows) < n:
        rows.append((f"Printer {len(rows)} jammed", "The office printer shows paper jam after every page."))
    return rows


def start_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """`itsm-triage serve` on a free port; waits for /livez."""
    return start_server(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env, port, log=log, cwd=REPO
    )


def post_all(port: int, texts: list[tuple[str, str]], first: int) -> None:
    """Send one signed jira:issue_created per ticket (ticket numbers from `first`)."""
    sample = load_sample("jira_issue_created")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for i, (subject, body) in enumerate(texts):
            payload = as_new_ticket(sample, first + i, subject=subject, body=body)
            d = make_delivery(payload, secret=SECRET, delivery_id=f"bench-{first + i}-{time.time_ns()}")
            r = client.post(d.path, content=d.body, headers=d.headers)
            if r.status_code not in (200, 202):
                raise SystemExit(f"webhook answered {r.status_code}: {r.text[:200]}")


def wait_sent(engine: object, total: int, timeout: float, workers: list[WorkerProcess]) -> float:
    """Block until `total` triage notes are sent; returns the monotonic time it happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:  # type: ignore[arg-type]
            n = s.exec(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.kind == "triage", Delivery.status == DeliveryStatus.sent)
            ).one()
        if n >= total:
            return time.monotonic()
        for w in workers:
            if w.proc.poll() is not None:
                raise SystemExit(f"worker exited:\n{w.tail()}")
        time.sleep(0.05)
    raise SystemExit(f"timed out: {n}/{total} notes sent\n" + "\n".join(w.tail(20) for w in workers))


def model_alone(settings: Settings, texts: list[tuple[str, str]], batch_size: int) -> float:
    """Tickets/s of the same backend over the same tickets, in-process, batches of `batch_size`."""
    triager = load_triager(settings)
    canon = [
        CanonicalTicket(source="jira", external_id=str(i), external_key=f"B-{i}", subject=s, body=b)
        for i, (s, b) in enumerate(texts)
    ]
    triager.triage(canon[:batch_size])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(canon), batch_size):
        triager.triage(canon[i : i + batch_size])
    return len(canon) / (time.perf_counter() - started)


def main() -> None:
    """Run both measurements and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=int, default=200)
    ap.add_argument("--backend", choices=["fake", "hf"], default="fake")
    ap.add_argument("--fake-latency-ms", type=int, default=400, help="per-batch latency of the fake model")
    ap.add_argument("--adapter", default=None, help="hf backend: adapter dir (default: the shipped adapter)")
    ap.add_argument("--no-draft", action="store_true", help="classify only (no reply drafting)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="hf backend: bound on a drafted reply")
    ap.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--deliver-concurrency", type=int, default=4)
    args = ap.parse_args()
    # A TERM (timeout, Ctrl-C from a wrapper) unwinds the ExitStack so no server or worker is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="itsm-bench-pipeline-"))
    db_url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    with ExitStack() as stack:
        broker = (
            stack.enter_context(redis_server(tmp)) if args.broker == "redis" else f"sqla+sqlite:///{tmp / 'broker.db'}"
        )
        fake = FakeJira().start()
        stack.callback(fake.stop)
        fake.auto_create_issues = True
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "ITSM_DATABASE_URL": db_url,
            "ITSM_BROKER_URL": broker,
            "ITSM_VAR_DIR": str(tmp / "var"),
            "ITSM_JIRA__WEBHOOK_SECRET": SECRET,
            "ITSM_JIRA__BASE_URL": fake.url,
            "ITSM_JIRA__EMAIL": fake.email,
            "ITSM_JIRA__API_TOKEN": fake.api_token,
            "ITSM_MODEL__BACKEND": args.backend,
            "ITSM_MODEL__FAKE_LATENCY_MS": str(args.fake_latency_ms),
            "ITSM_MODEL__BATCH_SIZE": str(args.batch_size),
            "ITSM_MODEL__BATCH_WAIT_MS": str(args.batch_wait_ms),
            "ITSM_POLICY": json.dumps({"priority": {"mode": "auto", "threshold": 0.9}}),
            "ITSM_LOG__LEVEL": "WARNING",
            "ITSM_MODEL__DRAFT_REPLIES": str(not args.no_draft).lower(),
            "ITSM_MODEL__MAX_NEW_TOKENS": str(args.max_new_tokens),
            "ITSM_MODEL__CACHE_DIR": str(REPO / "var" / "models"),
            **({"ITSM_MODEL__ADAPTER": args.adapter} if args.adapter else {}),
        }
        model = {
            "backend": args.backend,
            "fake_latency_ms": args.fake_latency_ms,
            "batch_size": args.batch_size,
            "adapter": args.adapter,
            "draft_replies": not args.no_draft,
            "max_new_tokens": args.max_new_tokens,
            "cache_dir": REPO / "var" / "models",
        }
        settings = Settings(database_url=db_url, broker_url=broker, model=model)
        upgrade(settings)
        engine = make_engine(settings)
        port = free_port()
        api = start_api(env, port, tmp / "api.log")
        stack.callback(lambda: (api.terminate(), api.wait(10)))
        triage_w = WorkerProcess(env, queues="triage", concurrency=1, beat=False, log=tmp / "triage.log")
        stack.callback(triage_w.stop)
        deliver_w = WorkerProcess(
            env, queues="deliver", concurrency=args.deliver_concurrency, beat=False, log=tmp / "deliver.log"
        )
        stack.callback(deliver_w.stop)
        workers = [triage_w, deliver_w]

        warm = tickets(args.batch_size, 0)
        post_all(port, warm, 0)  # warm-up: model loaded in the worker, connections open
        wait_sent(engine, len(warm), 600, workers)

        texts = tickets(args.tickets, args.batch_size)
        alone_before = model_alone(settings, texts, args.batch_size)
        started = time.monotonic()
        post_all(port, texts, 10_000)
        intake_rate = len(texts) / (time.monotonic() - started)
        finished = wait_sent(engine, len(warm) + len(texts), 1800, workers)
        pipeline_rate = len(texts) / (finished - started)
        alone_after = model_alone(settings, texts, args.batch_size)
        alone = statistics.fmean([alone_before, alone_after])

        with Session(engine) as s:
            sizes = [t.timings.get("batch_size", 0) for t in s.exec(select(Triage).where(Triage.id > len(warm)))]
        notes = [len(i.internal_comments()) for k, i in fake.issues.items() if k.isdigit() and k != "10231"]
        print(
            f"backend={args.backend} draft={not args.no_draft} batch_size={args.batch_size} "
            f"batch_wait_ms={args.batch_wait_ms} tickets={args.tickets} broker={args.broker} db={db_url.split(':')[0]}"
        )
        print(f"model alone          {alone:8.2f} tickets/s  (before {alone_before:.2f}, after {alone_after:.2f})")
        print(f"pipeline end-to-end  {pipeline_rate:8.2f} tickets/s  (webhook -> note written to fake Jira)")
        print(f"ratio pipeline/model {pipeline_rate / alone:8.2f}  (goal >= 0.8)")
        print(
            f"webhook intake       {intake_rate:8.2f} tickets/s  (sequential signed POSTs; caps the pipeline if lower)"
        )
        print(f"model batch sizes    mean {statistics.fmean(sizes):.1f}, max {max(sizes):.0f}, n={len(sizes)}")
        print(f"internal notes/issue {sorted(set(notes))} over {len(notes)} issues (must be [1])")


if __name__ == "__main__":
    main()
