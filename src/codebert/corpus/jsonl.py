"""CodeSearchNet jsonl / jsonl.gz: the exact schema, a forgiving reader and a writer (atomic: `codebert.io`).

A corpus directory has the layout CodeSearchNet distributed and `../shared/data/csn6` uses:
`<dir>/<language>/{train,valid,test,unimodal}.jsonl.gz`.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from codebert.errors import UserError
from codebert.io import atomic_write

log = logging.getLogger(__name__)

# CodeSearchNet's fields, in its order. Records we write carry exactly these.
FIELDS = (
    "repo",
    "path",
    "func_name",
    "original_string",
    "language",
    "code",
    "code_tokens",
    "docstring",
    "docstring_tokens",
    "sha",
    "url",
    "partition",
)
# What a record must hold for training and evaluation; the rest default to "" when absent, so
# derived corpora (e.g. CodeXGLUE's, which add `idx`) read too. Extra keys are kept as they are.
REQUIRED_LISTS = ("code_tokens", "docstring_tokens")
SPLITS = ("train", "valid", "test")
UNIMODAL = "unimodal"
ALL_FILES = (*SPLITS, UNIMODAL)
LANGUAGES = ("python", "java", "javascript", "php", "ruby", "go")


@dataclass
class ReadReport:
    """What a read skipped: one entry per malformed line, with its file and line number."""

    records: int = 0  # records read successfully
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" per skipped line

    def summary(self) -> str:
        return f"{self.records} records read, {len(self.skipped)} malformed lines skipped"


def _problem(obj: Any) -> str | None:
    """Why `obj` is not a usable CodeSearchNet record, or None if it is."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for key in REQUIRED_LISTS:
        value = obj.get(key)
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            return f"field {key!r} must be a list of strings"
    for key in FIELDS:
        if key in obj and key not in REQUIRED_LISTS and not isinstance(obj[key], str):
            return f"field {key!r} must be a string"
    return None


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def read_jsonl(path: str | Path, report: ReadReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a .jsonl or .jsonl.gz file.

    A malformed line (bad JSON, bad UTF-8, wrong field types) is skipped, logged with
    `file:line` and counted in `report`; it never stops the read. A missing or unreadable file
    is a UserError. Missing string fields are filled with "".
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with open(path, "rb") as raw:
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            for lineno, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.decode("utf-8"))
                    reason = _problem(obj)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    reason = f"not valid JSON ({exc.__class__.__name__}: {exc})"
                if reason is not None:
                    where = f"{path}:{lineno}: {reason}"
                    report.skipped.append(where)
                    log.warning("skipped malformed line %s", where)
                    continue
                for key in FIELDS:
                    obj.setdefault(key, "")
                report.records += 1
                yield obj
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        # A truncated or corrupt gzip stream: keep what was read, say where it broke.
        where = f"{path}: unreadable after {report.records} records ({exc})"
        report.skipped.append(where)
        log.warning("%s", where)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically as jsonl (gzip-compressed if `path` ends in .gz); return the count.

    Records are written with CodeSearchNet's fields first, in its order, then any extra keys.
    """
    path = Path(path)
    count = 0
    with atomic_write(path, binary=True) as raw:
        # mtime=0 makes the gzip bytes depend on the content alone, so reruns are byte-identical.
        stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        for record in records:
            ordered = {k: record.get(k, "") for k in FIELDS}
            ordered.update({k: v for k, v in record.items() if k not in ordered})
            stream.write(json.dumps(ordered, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
        if stream is not raw:
            stream.close()
    return count


def corpus_files(root: str | Path, languages: Iterable[str] | None = None) -> dict[str, dict[str, Path]]:
    """Find `<root>/<language>/<split>.jsonl[.gz]` files: {language: {split: path}}.

    A root with no such file is a UserError that says what layout was expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    wanted = set(languages) if languages else None
    found: dict[str, dict[str, Path]] = {}
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if wanted is not None and lang_dir.name not in wanted:
            continue
        for split in ALL_FILES:
            for suffix in (".jsonl.gz", ".jsonl"):
                candidate = lang_dir / f"{split}{suffix}"
                if candidate.is_file():
                    found.setdefault(lang_dir.name, {})[split] = candidate
                    break
    if not found:
        raise UserError(
            f"{root}: no corpus found (expected <dir>/<language>/{{train,valid,test,unimodal}}.jsonl.gz)"
        )
    if wanted is not None and (missing := wanted - set(found)):
        raise UserError(f"{root}: no data for language(s) {', '.join(sorted(missing))}")
    return found


def iter_corpus(
    root: str | Path,
    splits: Iterable[str],
    languages: Iterable[str] | None = None,
    max_records: int = 0,
    report: ReadReport | None = None,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(language, split, record) over the given splits of each language (languages sorted).

    `max_records` > 0 reads at most that many records of each file. Missing files are skipped.
    """
    files = corpus_files(root, languages)
    for lang in sorted(files):
        for split in splits:
            path = files[lang].get(split)
            if path is None:
                continue
            for i, record in enumerate(read_jsonl(path, report)):
                if max_records and i >= max_records:
                    break
                yield lang, split, record


def positions_by_language(languages: Iterable[str]) -> dict[str, list[int]]:
    """The positions of each language's items (`languages[i]`: item i's), in order, languages in the
    order they first appear: what a per-language index, batch or search is built over."""
    groups: dict[str, list[int]] = {}
    for i, lang in enumerate(languages):
        groups.setdefault(lang, []).append(i)
    return groups


def nl_text(record: dict[str, Any]) -> str:
    """The NL side of a pair, as CodeBERT's reference scripts build it: doc tokens joined by spaces."""
    return " ".join(record["docstring_tokens"])


def code_text(record: dict[str, Any]) -> str:
    """The code side of a pair: code tokens joined by spaces (comments and docstring already out)."""
    return " ".join(record["code_tokens"])
