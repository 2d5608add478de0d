"""Reading and validating ticket files: the bad-input cases get clear errors (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.data import DataError, label_sets, load_tickets, read_rows, split


def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_empty_subject_is_normal(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"subject": "", "body": "printer broken", "q": "a"}, {"subject": "x", "body": "", "q": "b"}])
    tickets, fields = load_tickets(p, ["q"])
    assert [t.id for t in tickets] == ["1", "2"]  # row numbers when there is no id column
    assert tickets[0].subject == "" and fields == ["q"]


def test_row_without_subject_and_body_is_an_error(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"subject": "a", "body": "b", "q": "x"}, {"subject": " ", "body": None, "q": "y"}])
    with pytest.raises(DataError, match="row 2 has neither a subject nor a body"):
        load_tickets(p, ["q"])


def test_unknown_label_column(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"subject": "a", "body": "b", "q": "x"}, {"subject": "c", "body": "d", "q": "y"}])
    with pytest.raises(DataError, match=r"unknown label column\(s\) \['queue'\]"):
        load_tickets(p, ["queue"])


def test_missing_text_columns(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"title": "a", "q": "x"}])
    with pytest.raises(DataError, match="neither a 'subject' nor a 'body' column"):
        load_tickets(p, ["q"])


def test_one_class_label_column(tmp_path: Path) -> None:
    p = _jsonl(tmp_path, [{"subject": "a", "body": "b", "q": "x"}, {"subject": "c", "body": "d", "q": "x"}])
    with pytest.raises(DataError, match="label column 'q' has 1 class"):
        load_tickets(p, ["q"])


def test_broken_csv_quoting(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('subject,body,q\n"ok","fine",a\n"broken,"unterminated quote here,b\nx,y,c\n')
    with pytest.raises(DataError, match="quoting"):
        read_rows(p)


def test_csv_with_extra_cells(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("subject,body,q\na,b,c,d\n")
    with pytest.raises(DataError, match="check the quoting"):
        read_rows(p)


def test_good_csv_and_inferred_fields(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    lines = ["id,subject,body,team,prio,free_text"]
    for i in range(40):
        lines.append(
            f'{i},"s{i}","body, with comma {i}",{["net", "hw"][i % 2]},{["P1", "P2", "P3"][i % 3]},unique text {i}'
        )
    p.write_text("\n".join(lines) + "\n")
    tickets, fields = load_tickets(p)
    assert fields == ["team", "prio"]
    assert label_sets(tickets, fields) == {"team": ["hw", "net"], "prio": ["P1", "P2", "P3"]}


def test_bad_json_line(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"subject": "a", "body": "b"}\n{not json}\n')
    with pytest.raises(DataError, match=r"t.jsonl:2: not valid JSON"):
        read_rows(p)


def test_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "subject": "s", "body": "b", "q": "xy"[i % 2]} for i in range(200)]
    tickets, _ = load_tickets(_jsonl(tmp_path, rows), ["q"])
    a1, b1 = split(tickets, 0.2)
    _a2, b2 = split(tickets, 0.2)
    assert [t.id for t in b1] == [t.id for t in b2]
    assert not {t.id for t in a1} & {t.id for t in b1}
    assert 20 <= len(b1) <= 60
