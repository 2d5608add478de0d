"""`python -m workers --queues triage,draft,deliver [--concurrency N] [--beat]`: a worker without the full CLI."""

from __future__ import annotations

import argparse

from service.logging import configure_logging
from service.settings import Settings
from workers.app import run_worker


def main() -> None:
    """Parse the few worker flags and run it with Settings() from the environment."""
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--queues", default="triage,draft,deliver")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--beat", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    run_worker(settings, queues=queues, concurrency=args.concurrency or settings.worker.concurrency, beat=args.beat)


if __name__ == "__main__":
    main()
