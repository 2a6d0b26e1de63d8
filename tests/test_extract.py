"""The extraction stage over a tree: records, splits by repository, and every kind of bad input."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from codebert.config import load_config
from codebert.corpus import build
from codebert.corpus.extract import SourceFile, extract_file, read_source, walk
from codebert.corpus.jsonl import FIELDS
from conftest import SAMPLES


def run_extract(paths, out, **flags):
    cfg = load_config(build.ExtractConfig, None, {"paths": [str(p) for p in paths], "out": str(out), "progress": "false", **flags})
    return build.main(cfg)


def read(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_sample_tree_gives_csn_records_per_language(tmp_path):
    figures = run_extract([SAMPLES], tmp_path / "corpus", workers="1", valid_fraction="0", test_fraction="0")
    counts = figures["counts"]
    # Documented functions that pass the filters, per language (see test_functions.EXPECTED).
    assert {lang: c["train"] for lang, c in counts.items()} == {
        "python": 2, "java": 2, "javascript": 5, "php": 2, "ruby": 1, "go": 2,
    }
    assert {lang: c["unimodal"] for lang, c in counts.items()} == {
        "python": 1, "java": 1, "javascript": 0, "php": 1, "ruby": 1, "go": 1,
    }
    records = read(tmp_path / "corpus" / "python" / "train.jsonl.gz")
    assert all(list(r) == list(FIELDS) for r in records)
    memory = next(r for r in records if r["func_name"] == "parse_memory")
    assert memory["repo"] == "samples/pyproj" and memory["path"] == "pkg/memory.py"
    assert memory["url"] == "samples/pyproj/pkg/memory.py#L6-L15"
    assert memory["partition"] == "train" and memory["code"] == memory["original_string"]
    uni = read(tmp_path / "corpus" / "python" / "unimodal.jsonl.gz")
    assert [r["func_name"] for r in uni] == ["undocumented_total"]
    assert uni[0]["docstring"] == "" and uni[0]["docstring_tokens"] == []
    reasons = figures["reasons"]
    assert reasons["function:doc_too_short"] == {"python": 1}  # "Get it" is two tokens
    assert reasons["function:test_name"]["python"] == 1


def test_output_is_deterministic_and_parallel_equals_serial(tmp_path):
    run_extract([SAMPLES], tmp_path / "a", workers="1")
    run_extract([SAMPLES], tmp_path / "b", workers="2")
    for path in sorted((tmp_path / "a").rglob("*.jsonl.gz")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def make_projects(root: Path, n: int) -> None:
    """n small Python repositories, each with distinct documented functions."""
    for i in range(n):
        lines = []
        for j in range(4):
            lines.append(
                f'def function_{i}_{j}(value):\n    """Compute variant {i} {j} of the value carefully."""\n'
                f"    result = value * {i * 10 + j}\n    result = result + {j} - {i}\n    return result // {j + 2}\n"
            )
        (root / f"proj{i}").mkdir(parents=True)
        (root / f"proj{i}" / "mod.py").write_text("\n\n".join(lines))


def test_split_is_by_repository_and_depends_on_the_seed(tmp_path):
    make_projects(tmp_path / "src", 20)
    figures = run_extract([tmp_path / "src"], tmp_path / "c1", seed="1", near_duplicate_jaccard="1.0")
    repos = {}
    for split in ("train", "valid", "test"):
        repos[split] = {r["repo"] for r in read(tmp_path / "c1" / "python" / f"{split}.jsonl.gz")}
        assert repos[split], split
    assert not (repos["train"] & repos["valid"]) and not (repos["train"] & repos["test"]) and not (repos["valid"] & repos["test"])
    assert figures["counts"]["python"]["train"] == 64  # 16 of 20 repositories, 4 functions each
    run_extract([tmp_path / "src"], tmp_path / "c2", seed="1", near_duplicate_jaccard="1.0")
    assert (tmp_path / "c1/python/test.jsonl.gz").read_bytes() == (tmp_path / "c2/python/test.jsonl.gz").read_bytes()
    run_extract([tmp_path / "src"], tmp_path / "c3", seed="2", near_duplicate_jaccard="1.0")
    test_repos_seed2 = {r["repo"] for r in read(tmp_path / "c3" / "python" / "test.jsonl.gz")}
    assert test_repos_seed2 != repos["test"]


def test_near_duplicates_of_train_code_are_removed_from_test(tmp_path):
    make_projects(tmp_path / "src", 20)
    # With the default threshold, the generated functions (same shape, other constants) are
    # near-duplicates of train ones, so valid and test lose them.
    figures = run_extract([tmp_path / "src"], tmp_path / "c", seed="1")
    assert figures["counts"]["python"]["valid"] + figures["counts"]["python"]["test"] < 16
    assert figures["reasons"]["function:leak_near_duplicate"]["python"] > 0


def test_exact_duplicates_are_kept_once(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b"):
        shutil.copytree(SAMPLES / "pyproj", src / name)
    figures = run_extract([src], tmp_path / "out", valid_fraction="0", test_fraction="0")
    assert figures["counts"]["python"]["train"] == 2
    assert figures["reasons"]["function:duplicate"]["python"] == 3


GOOD = b'def documented_function(x):\n    """Return twice the value given."""\n    y = x * 2\n    return y\n'


def test_bad_files_are_counted_by_reason_and_never_crash(tmp_path):
    root = tmp_path / "bad" / "proj"
    root.mkdir(parents=True)
    (root / "good.py").write_bytes(GOOD)
    (root / "latin1.py").write_bytes(b"# caf\xe9\n" + GOOD)
    (root / "binary.py").write_bytes(b"\x00\x01\x02" + GOOD)
    (root / "huge.py").write_bytes(GOOD + b"#" * 1_100_000)
    (root / "broken.py").write_bytes(b"def broken(:\n    return ((\n" + GOOD.replace(b"documented", b"other"))
    (root / "gen.py").write_bytes(b"# Code generated by tool. DO NOT EDIT.\n" + GOOD)
    (root / "bundle.min.js").write_bytes(b"function a(){return 1}")
    (root / "long.js").write_bytes(b"var x = 1;" * 500)
    (root / "dangling.py").symlink_to(root / "missing.py")
    (root / "loop").symlink_to(root)  # a folder link back into the tree
    (root / "vendor").mkdir()
    (root / "vendor" / "lib.py").write_bytes(GOOD)
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_bytes(GOOD)
    (root / "x_test.go").write_bytes(b"package x\n")
    figures = run_extract([tmp_path / "bad"], tmp_path / "out", languages=["python", "javascript", "go"],
                          valid_fraction="0", test_fraction="0")
    reasons = {key: sum(per_lang.values()) for key, per_lang in figures["reasons"].items()}
    assert reasons["file:not_utf8"] == 1
    assert reasons["file:binary"] == 1
    assert reasons["file:too_large"] == 1
    assert reasons["file:broken_symlink"] == 1
    assert reasons["file:syntax_error"] == 1
    assert reasons["file:generated"] == 1
    assert reasons["file:minified"] == 2  # by name and by line length
    assert reasons["folder:symlink_loop"] == 1
    assert reasons["folder:vendor_path"] == 1
    assert reasons["folder:test_path"] == 1
    assert reasons["file:test_path"] == 1
    # The good function, and the good one after the syntax error, are both extracted.
    names = {r["func_name"] for r in read(tmp_path / "out" / "python" / "train.jsonl.gz")}
    assert names == {"documented_function", "other_function"}


def test_syntax_error_inside_a_function_drops_only_that_function(tmp_path):
    src = SourceFile(str(tmp_path / "m.py"), "r", "m.py", "python", "")
    Path(src.path).write_bytes(GOOD + b"\n\ndef bad(x):\n    y = (x +\n    return y\n    z = 1\n")
    result = extract_file(src)
    assert [r["func_name"] for r in result.bimodal] == ["documented_function"]
    assert result.reasons[("python", "function:syntax_error")] == 1


def test_git_checkouts_name_their_repository(tmp_path):
    repo = tmp_path / "work" / "checkout"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
    (repo / ".git" / "config").write_text('[remote "origin"]\n\turl = https://example.org/owner/project.git\n')
    (repo / "pkg").mkdir()
    (repo / "pkg" / "m.py").write_bytes(GOOD)
    (files,) = [list(walk([tmp_path / "work"], ("python",), "top", Counter()))]
    assert [(f.repo, f.rel_path, f.sha) for f in files] == [
        ("owner/project", "pkg/m.py", "0123456789abcdef0123456789abcdef01234567")
    ]


def test_failed_run_leaves_no_half_written_file(tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = {"n": 0}
    real = build.write_jsonl

    def flaky(path, records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path, records)

    monkeypatch.setattr(build, "write_jsonl", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_extract([SAMPLES / "pyproj"], out, valid_fraction="0", test_fraction="0")
    leftovers = [p.name for p in out.rglob("*") if p.is_file()]
    assert all(not name.endswith(".tmp") for name in leftovers)


def test_unreadable_file_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "m.py"
    path.write_bytes(GOOD)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    assert read_source(str(path)) == (None, "unreadable")



@contextlib.contextmanager
def deadline(seconds: int):
    """Fail, rather than hang the suite, when the block has not finished in time (a blocked open)."""

    def expire(signum, frame):
        # pytest.fail, not TimeoutError: that is an OSError, which the code under test may catch.
        pytest.fail(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_special_files_are_counted_not_read(tmp_path):
    root = tmp_path / "src" / "proj"
    root.mkdir(parents=True)
    (root / "good.py").write_bytes(GOOD)
    os.mkfifo(root / "pipe.py")  # opening it would wait for a writer forever
    (root / "zero.py").symlink_to("/dev/zero")  # endless, and its st_size is 0
    with deadline(60):
        figures = run_extract([tmp_path / "src"], tmp_path / "out", workers="1", valid_fraction="0", test_fraction="0")
        # The walk already leaves zero.py out (its target is outside the tree); read alone, it is
        # refused as well.
        assert read_source(str(root / "zero.py")) == (None, "not_regular")
    assert figures["reasons"]["file:not_regular"] == {"python": 1}
    assert figures["reasons"]["file:outside_root"] == {"python": 1}
    assert [r["func_name"] for r in read(tmp_path / "out" / "python" / "train.jsonl.gz")] == ["documented_function"]


def test_the_size_bound_holds_for_what_is_read_not_what_stat_says(monkeypatch):
    # /proc files are regular files whose st_size is 0 whatever they hold.
    assert os.stat("/proc/self/maps").st_size == 0
    monkeypatch.setattr("codebert.corpus.filters.MAX_FILE_BYTES", 16)
    assert read_source("/proc/self/maps") == (None, "too_large")


def test_links_out_of_the_root_are_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "lib").mkdir(parents=True)
    (elsewhere / "secret.py").write_bytes(GOOD.replace(b"documented", b"secret"))
    (elsewhere / "lib" / "mod.py").write_bytes(GOOD.replace(b"documented", b"linked_folder"))
    root = tmp_path / "src" / "proj"
    root.mkdir(parents=True)
    (root / "good.py").write_bytes(GOOD)
    (root / "link.py").symlink_to(elsewhere / "secret.py")
    (root / "lib").symlink_to(elsewhere / "lib")
    (root / "alias.py").symlink_to(root / "good.py")  # a link inside the root is fine
    reasons: Counter = Counter()
    files = list(walk([tmp_path / "src"], ("python",), "top", reasons))
    assert sorted(Path(f.path).name for f in files) == ["alias.py", "good.py"]
    assert reasons[("python", "file:outside_root")] == 1 and reasons[("*", "folder:outside_root")] == 1
    # Named as a root itself, the other tree is walked as usual.
    assert [Path(f.path).name for f in walk([elsewhere], ("python",), "top", Counter())] == ["secret.py", "mod.py"]


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path, monkeypatch, capsys):
    import errno

    from codebert.cli import main

    written = {"n": 0}
    real_write = gzip.GzipFile.write

    def fills_up(self, data):
        written["n"] += 1
        if written["n"] > 3:  # a few records in, the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    monkeypatch.setattr(gzip.GzipFile, "write", fills_up)
    out = tmp_path / "out"
    assert main(["corpus", "extract", str(SAMPLES), "--out", str(out), "--no-progress", "--workers", "1"]) == 2
    assert capsys.readouterr().err == "codebert: error: No space left on device\n"
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert all(not p.name.endswith(".tmp") for p in leftovers)
    for path in leftovers:
        read(path)  # whole files only: a cut gzip stream would raise EOFError
