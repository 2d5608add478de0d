"""`python -m workers.beat`: Celery beat in a process of its own, started by a worker that runs the sweeper on the
embedded SQLite broker (workers/app.py run_worker).

Why not the embedded beat (`worker --beat`) there: it is a fork of the worker's parent, and on the SQLite broker its
publishes failed ("channel disconnected" after a 10 s wait, then on every tick: the sweeper never ran), depending on
what the parent had imported and opened before forking. A beat started as a fresh process publishes reliably
(tests/workers/test_worker_e2e.py: events left `received` are triaged via the sweeper).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.child_process import preexec
from service.logging import configure_logging
from service.settings import Settings


def start(schedule: Path) -> subprocess.Popen[bytes]:
    """The beat process for this worker; it gets SIGTERM when the worker dies (Linux), so it never outlives it."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.beat", str(schedule)],
        preexec_fn=preexec(),
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    """Run beat with the worker app's schedule (Settings() from the environment, as the worker has)."""
    from workers.app import make_worker_app

    settings = Settings()
    configure_logging(settings)
    app = make_worker_app(settings)
    app.Beat(schedule=sys.argv[1], loglevel=settings.log.level).run()


if __name__ == "__main__":
    main()
