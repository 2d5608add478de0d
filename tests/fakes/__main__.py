"""Run a fake ITSM server as a process (manual runs, benchmarks): ``python -m tests.fakes jira --port 8081``.

Prints one JSON line with the URL and the settings to export (ITSM_JIRA__* or ITSM_SERVICENOW__*), then serves
until interrupted. With ``--summary FILE`` it writes what it holds (comments / journal entries per ticket and the
request count) to FILE on exit, so a run can be checked afterwards. ``--history N`` also serves N resolved tickets
(``itsm-triage history import``).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from tests.fakes.fake_jira import FakeJira
from tests.fakes.fake_servicenow import FakeServiceNow


def summary(fake: FakeJira | FakeServiceNow) -> dict[str, Any]:
    """Counts an operator can check after a run (e.g. exactly one internal note per ticket)."""
    tickets: dict[str, Any] = {}
    if isinstance(fake, FakeJira):
        for issue in {id(i): i for i in fake.issues.values()}.values():
            tickets[issue.key] = {"internal": len(issue.internal_comments()), "public": len(issue.public_comments()),
                                  "priority": issue.priority.get("name"), "labels": issue.labels}  # fmt: skip
    else:
        for sys_id, inc in fake.incidents.items():
            tickets[sys_id] = {"work_notes": len(inc.work_notes), "comments": len(inc.comments)}
    return {"requests": len(fake.requests), "tickets": tickets}


def main() -> None:
    """Parse arguments, start the fake, wait for SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes")
    parser.add_argument("system", choices=["jira", "servicenow"])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--summary", type=Path, help="write a JSON summary here on exit")
    parser.add_argument("--history", type=int, default=0, help="serve this many resolved tickets (history import)")
    args = parser.parse_args()
    fake: FakeJira | FakeServiceNow
    if args.history and args.system == "jira":
        from tests.fakes.history_jira import HistoryJira

        fake = HistoryJira(port=args.port, tickets=args.history)
    elif args.history:
        from tests.fakes.history_servicenow import HistoryServiceNow

        fake = HistoryServiceNow(port=args.port, tickets=args.history)
    else:
        fake = FakeJira(port=args.port) if args.system == "jira" else FakeServiceNow(port=args.port)
    if isinstance(fake, FakeJira):
        fake.auto_create_issues = True
    else:
        fake.auto_create_incidents = True
    fake.start()
    prefix = "ITSM_JIRA__" if args.system == "jira" else "ITSM_SERVICENOW__"
    env = {prefix + k.upper(): str(v) for k, v in fake.settings().items()}
    print(json.dumps({"url": fake.url, "env": env}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    fake.stop()
    if args.summary:
        args.summary.write_text(json.dumps(summary(fake), indent=2))


if __name__ == "__main__":
    main()
