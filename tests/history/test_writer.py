"""The row writer (scrubbing, de-duplication, bounds), the recent split and the progress line, without a server."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from models.data import load_tickets
from service.cli import main
from service.history.progress import Progress
from service.history.records import HistoryTicket
from service.history.summary import Summary
from service.history.writer import MAX_TEXT_CHARS, DigestSet, RowWriter, Seen

CARD = "4111 1111 1111 1111"


def write(tickets: list[HistoryTicket], *, seen: Seen | None = None) -> tuple[list[dict[str, object]], Summary]:
    buf = io.BytesIO()
    summary = Summary()
    writer = RowWriter(buf, source="jira", labels=["queue", "priority"], summary=summary, seen=seen or Seen())
    for t in tickets:
        writer.add(t)
    return [json.loads(line) for line in buf.getvalue().decode().splitlines()], summary


def t(key: str, subject: str, body: str = "", **kw: object) -> HistoryTicket:
    labels = kw.pop("labels", {"queue": "Network", "priority": "P3"})
    return HistoryTicket(key=key, subject=subject, body=body, labels=labels, **kw)  # type: ignore[arg-type]


def test_secrets_and_card_numbers_never_reach_the_file() -> None:
    out, summary = write(
        [
            t(
                "SD-1",
                "Card declined",
                f"My card {CARD} was declined. password: Hunter2!x",
                reply=f"Please never send {CARD} by mail; use token ghp_{'a' * 36}.",
            )
        ]
    )
    text = json.dumps(out)
    assert CARD not in text and "Hunter2!x" not in text and "ghp_" not in text
    assert "[REDACTED:card]" in out[0]["body"] and "[REDACTED:card]" in str(out[0]["reply"])
    assert summary.redactions["card"] == 2 and summary.redactions["password"] == 1
    assert summary.redactions["token"] == 1


def test_digest_set_finds_what_was_added_across_merges() -> None:
    digests = DigestSet(merge_at=7)
    added = [(i * 2_654_435_761) % 2**64 for i in range(1, 500)]
    for d in added:
        digests.add(d)
    digests.add(added[3])  # again: still one
    assert len(digests) == len(added) and all(d in digests for d in added)
    assert not any(d + 1 in digests for d in added) and 0 not in digests and 2**64 - 1 not in digests


def test_duplicates_and_refilings_collapse_and_unusable_tickets_are_counted() -> None:
    out, summary = write(
        [
            t("SD-1", "VPN down", "The VPN drops every hour."),
            t("SD-1", "VPN down", "The VPN drops every hour."),  # the same ticket again
            t("SD-2", "RE: Fwd:  vpn DOWN", "The  VPN drops\nevery hour."),  # filed again
            t("SD-3", "VPN down", "The VPN drops every two hours."),  # different text: kept
            t("SD-4", "", "   "),
            t("SD-5", "Lonely", "no labels", labels={}),
            t("SD-6", "Closed as duplicate", "x", skip="closed_as_duplicate"),
        ],
        seen=Seen(ids=DigestSet(merge_at=1), texts=DigestSet(merge_at=2)),  # digests merged as they come
    )
    assert [r["id"] for r in out] == ["jira:SD-1", "jira:SD-3"]
    assert summary.read == 7 and summary.written == 2
    assert dict(summary.skipped) == {
        "duplicate": 1,
        "refiling": 1,
        "no_text": 1,
        "no_label": 1,
        "closed_as_duplicate": 1,
    }


def test_long_text_is_cut_and_seen_digests_rebuild_from_the_file(tmp_path: Path) -> None:
    out, summary = write([t("SD-1", "Log", "x " * MAX_TEXT_CHARS)])
    assert len(str(out[0]["body"])) == MAX_TEXT_CHARS and summary.truncated == 1
    path = tmp_path / "o.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out) + '{"id": "jira:SD-9", "subj')
    seen = Seen.from_output(path, upto=len(path.read_bytes()) - len('{"id": "jira:SD-9", "subj'))
    again, summary = write([t("SD-1", "other", "text"), t("SD-2", "Log", "x " * MAX_TEXT_CHARS)], seen=seen)
    assert again == [] and dict(summary.skipped) == {"duplicate": 1, "refiling": 1}


def test_the_output_is_what_train_reads(tmp_path: Path) -> None:
    out, _ = write(
        [
            t(f"SD-{i}", f"Ticket {i}", f"Body {i}", labels={"queue": "AB"[i % 2], "priority": f"P{2 + i % 3 // 2}"})
            for i in range(10)
        ]
    )
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    tickets, fields = load_tickets(path)  # as `train` without --fields: the label columns are inferred
    assert fields == ["queue", "priority"] and len(tickets) == 10
    assert tickets[2].labels == {"queue": "A", "priority": "P3"} and tickets[2].id == "jira:SD-2"


def test_split_holds_out_the_newest_lines(tmp_path: Path) -> None:
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps({"id": f"jira:SD-{i}"}) + "\n" for i in range(20)))
    result = CliRunner().invoke(main, ["history", "split", "--data", str(data), "--recent", "0.25"])
    assert result.exit_code == 0, result.output
    train = [json.loads(x)["id"] for x in (tmp_path / "tickets.train.jsonl").read_text().splitlines()]
    recent = [json.loads(x)["id"] for x in (tmp_path / "tickets.recent.jsonl").read_text().splitlines()]
    assert train == [f"jira:SD-{i}" for i in range(15)] and recent == [f"jira:SD-{i}" for i in range(15, 20)]
    assert "15 older tickets" in result.output and "5 most recent tickets" in result.output


def test_progress_prints_counts_rate_and_eta_in_logs() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, interval_s=10, clock=lambda: now[0])
    progress.begin(total=1000, already_read=100)
    s = Summary(read=100)
    for read in (200, 300, 400):
        now[0] += 5
        s.read, s.written = read, read - 10
        s.skipped["refiling"] = 10
        progress.update(s)
    progress.close(s)
    progress.close(s)  # the same counts again: not printed twice
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == "300/1,000 read · 290 written · 10 skipped · 20/s · ETA 0:35"  # at 10 s, not at 5
    assert lines[-1] == "400/1,000 read · 390 written · 10 skipped · 20/s · ETA 0:30"
