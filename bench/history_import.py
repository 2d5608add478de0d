"""A history import from a fake Jira / ServiceNow with N resolved tickets: wall time, throughput and memory.

The fake runs as its own process (`python -m tests.fakes SYSTEM --history N`), so this process's memory is the
importer's alone. The import runs the CLI's code path in-process and samples the resident set (VmRSS) and the
Python heap in use (tracemalloc off: it would slow the run; `--heap` turns it on) after every page. Prints one
line per 20% of the way and the figures that matter:

    rss at 20%: X MiB ... rss at 100%: Y MiB (growth Y-X), peak Z MiB; T s, R tickets/s

    python bench/history_import.py [--system jira|servicenow] [--tickets 10000] [--heap]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.language import detect  # noqa: E402
from service.cli.history import build_source, default_labels  # noqa: E402
from service.history.importer import default_checkpoint, run_import  # noqa: E402
from service.history.jira import jira_plan  # noqa: E402
from service.history.servicenow import servicenow_plan  # noqa: E402
from service.history.summary import Summary  # noqa: E402
from service.settings import Settings  # noqa: E402


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    """Start the fake, import everything, print the memory curve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=["jira", "servicenow"], default="jira")
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--heap", action="store_true", help="also trace the Python heap (slower)")
    args = parser.parse_args()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", args.system, "--history", str(args.tickets)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        env = json.loads(fake.stdout.readline())["env"]
        group = {k.split("__", 1)[1].lower(): v for k, v in env.items()}
        settings = Settings(jira=group) if args.system == "jira" else Settings(servicenow=group)
        labels = default_labels(settings, args.system)
        plan = (
            jira_plan(query=None, since=None, projects=[])
            if args.system == "jira"
            else servicenow_plan(query=None, since=None)
        )
        source = build_source(
            settings, args.system, plan, labels, page_size=100, concurrency=4, skip_authors=(), on_wait=None
        )
        out = Path(tempfile.mkdtemp()) / "history.jsonl"
        marks: list[tuple[int, float, float]] = []
        step = max(1, args.tickets // 5)
        if args.heap:
            tracemalloc.start()

        def sample(summary: Summary) -> None:
            if summary.read >= (len(marks) + 1) * step:
                heap = tracemalloc.get_traced_memory()[0] / 2**20 if args.heap else float("nan")
                marks.append((summary.read, rss_mib()[0], heap))
                print(f"{summary.read:>7,} read: rss {marks[-1][1]:.1f} MiB, heap {heap:.1f} MiB", flush=True)

        started = time.monotonic()
        result = run_import(
            source,
            out=out,
            checkpoint_path=default_checkpoint(out),
            checkpoint=None,
            options={},
            labels=list(labels),
            detect_language=detect,
            on_page=sample,
        )
        elapsed = time.monotonic() - started
        source.close()
        s = result.summary
        first, last = marks[0], marks[-1]
        report: dict[str, Any] = {
            "system": args.system,
            "tickets": args.tickets,
            "read": s.read,
            "written": s.written,
            "seconds": round(elapsed, 1),
            "tickets_per_s": round(s.read / elapsed, 1),
            "rss_first_mib": round(first[1], 1),
            "rss_last_mib": round(last[1], 1),
            "rss_growth_mib": round(last[1] - first[1], 1),
            "peak_rss_mib": round(rss_mib()[1], 1),
            "output_mib": round(out.stat().st_size / 2**20, 1),
        }
        if args.heap:
            report["heap_growth_mib"] = round(last[2] - first[2], 2)
        print(json.dumps(report))
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fake.kill()
            fake.wait()


if __name__ == "__main__":
    main()
