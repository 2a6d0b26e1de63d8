"""CodeSearchNet jsonl I/O: exact schema, malformed lines skipped with file:line, atomic writes."""

from __future__ import annotations

import gzip
import json

import pytest

from codebert.corpus.jsonl import FIELDS, ReadReport, corpus_files, read_jsonl, write_jsonl

from codebert.io import atomic_write
from codebert.errors import UserError

RECORD = {
    "repo": "owner/name", "path": "a/b.py", "func_name": "f", "original_string": "def f(): pass",
    "language": "python", "code": "def f(): pass", "code_tokens": ["def", "f"], "docstring": "Doc.",
    "docstring_tokens": ["Doc", "."], "sha": "", "url": "owner/name/a/b.py#L1-L1", "partition": "train",
}


@pytest.mark.parametrize("name", ["x.jsonl", "x.jsonl.gz"])
def test_round_trip_keeps_schema_order_and_extra_keys(tmp_path, name):
    extra = dict(RECORD, idx=7)
    assert write_jsonl(tmp_path / name, [RECORD, extra]) == 2
    back = list(read_jsonl(tmp_path / name))
    assert back == [RECORD, extra]
    assert list(back[1]) == [*FIELDS, "idx"]


def test_malformed_lines_are_skipped_counted_and_located(tmp_path, caplog):
    path = tmp_path / "train.jsonl.gz"
    lines = [
        json.dumps(RECORD),
        "{not json",
        json.dumps([1, 2]),
        json.dumps(dict(RECORD, code_tokens="def f")),
        "",
        json.dumps(dict(RECORD, func_name=3)),
        json.dumps({k: v for k, v in RECORD.items() if k not in ("sha", "url")}),
    ]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.write("\n")
    with open(path, "ab") as f:  # a second gzip member holding invalid UTF-8
        f.write(gzip.compress(b'{"code_tokens": ["\xff"]}\n'))
    report = ReadReport()
    records = list(read_jsonl(path, report))
    assert len(records) == 2 and records[1]["sha"] == "" and records[1]["url"] == ""
    assert [s.split(":")[1] for s in report.skipped] == ["2", "3", "4", "6", "9"]
    assert all(s.startswith(str(path)) for s in report.skipped)
    assert "skipped malformed line" in caplog.text


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    write_jsonl(path, [RECORD] * 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = ReadReport()
    list(read_jsonl(path, report))
    assert report.skipped and "unreadable after" in report.skipped[-1]


def test_missing_file_and_missing_corpus_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        list(read_jsonl(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="no corpus found"):
        corpus_files(tmp_path)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("new, half")
            raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_an_output_path_that_cannot_be_written_is_a_user_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write .*a-file/out.txt"):
        with atomic_write(blocker / "out.txt") as f:
            f.write("never")
    assert blocker.read_text() == "x"
