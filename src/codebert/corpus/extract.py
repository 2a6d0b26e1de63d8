"""Walk source trees and turn every file into CodeSearchNet records, in parallel, never crashing.

`walk` yields the source files under the given roots with the repository each belongs to, and
counts what it passes over (vendored and test folders, symlink loops, unreadable folders, links
leading out of the root). `extract_file` reads, checks and parses one file in a worker process;
bad input (not UTF-8, binary, over 1 MB, not a regular file, unreadable, syntax errors) is counted
by reason, never raised.
"""

from __future__ import annotations

import configparser
import logging
import multiprocessing
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any, Literal

from tqdm import tqdm

from codebert.corpus import filters
from codebert.corpus.functions import Function, parse_functions
from codebert.corpus.languages import language_for

log = logging.getLogger(__name__)

RepoUnit = Literal["top", "root"]
ANY_LANGUAGE = "*"  # the language of a reason counted for a whole folder


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute path on disk
    repo: str  # repository the file belongs to (the unit of the train/valid/test split)
    rel_path: str  # path inside the repository, with forward slashes
    language: str
    sha: str  # the checkout's commit for git repositories, "" otherwise


@dataclass
class FileResult:
    bimodal: list[dict[str, Any]] = field(default_factory=list)  # documented functions
    unimodal: list[dict[str, Any]] = field(default_factory=list)  # functions without a doc comment
    reasons: Counter = field(default_factory=Counter)  # (language, "file:<why>" or "function:<why>") -> count


def _git_identity(repo_dir: Path) -> tuple[str, str]:
    """(name, commit) of a git checkout: `owner/name` from the origin URL if any, else the folder."""
    git = repo_dir / ".git"
    name, sha = repo_dir.name, ""
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.is_file():
                sha = ref_file.read_text(encoding="utf-8").strip()
            elif (git / "packed-refs").is_file():
                for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
                    if line.endswith(" " + ref):
                        sha = line.split()[0]
        else:
            sha = head
        config = configparser.ConfigParser(strict=False)
        config.read(git / "config", encoding="utf-8")
        url = config.get('remote "origin"', "url", fallback="")
        match = re.search(r"[:/]([^/:]+/[^/]+?)(\.git)?/?$", url)
        if match:
            name = match.group(1)
    except (OSError, UnicodeDecodeError, configparser.Error):
        pass  # a damaged .git still names a repository: its folder
    return name, sha


def _inside(path: str, root: str) -> bool:
    """Whether `path`, its links resolved, lies in the folder `root` (a resolved path)."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def walk(
    roots: list[Path], languages: tuple[str, ...], repo_unit: RepoUnit, reasons: Counter
) -> Iterator[SourceFile]:
    """Source files under `roots`, in a deterministic order, each with its repository.

    Repository of a file: the nearest enclosing git checkout; else, with repo_unit "top", the
    first entry below the root it was found under (a package of the standard library, a project in
    a folder of projects, a single module file); with "root", the root itself.
    Symbolic links to folders are followed once: a link back into a folder being walked is a loop.
    Links that lead out of the root, to a folder or a file, are not followed (counted as
    outside_root): a corpus or an index holds only what lies in the trees it was asked for.
    """
    for root in roots:
        root = root.resolve()
        if root.is_file():
            lang = language_for(root.name, languages)
            if lang is not None:
                yield SourceFile(str(root), root.parent.name, root.name, lang, "")
            continue
        visited: set[tuple[int, int]] = set()

        def on_error(exc: OSError) -> None:
            reasons[(ANY_LANGUAGE, "folder:unreadable")] += 1
            log.info("unreadable folder %s (%s)", exc.filename, exc.strerror)

        git_roots: dict[str, tuple[str, str, str]] = {}  # folder -> (repo dir, name, sha)
        for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
            here = Path(dirpath)
            if not _inside(dirpath, str(root)):
                reasons[(ANY_LANGUAGE, "folder:outside_root")] += 1
                dirnames[:] = []
                continue
            try:
                stat = here.stat()
            except OSError:
                reasons[(ANY_LANGUAGE, "folder:unreadable")] += 1
                dirnames[:] = []
                continue
            if (stat.st_dev, stat.st_ino) in visited:
                reasons[(ANY_LANGUAGE, "folder:symlink_loop")] += 1
                dirnames[:] = []
                continue
            visited.add((stat.st_dev, stat.st_ino))
            kept = []
            for name in sorted(dirnames):
                reason = filters.directory_reason(name)
                if reason is None:
                    kept.append(name)
                elif reason != "skipped_dir":
                    reasons[(ANY_LANGUAGE, f"folder:{reason}")] += 1
            dirnames[:] = kept
            if (here / ".git").exists():
                name, sha = _git_identity(here)
                git_roots[dirpath] = (dirpath, name, sha)
            else:
                parent = os.path.dirname(dirpath)
                if parent in git_roots and dirpath != str(root):
                    git_roots[dirpath] = git_roots[parent]
            for filename in sorted(filenames):
                lang = language_for(filename, languages)
                if lang is None:
                    continue
                reason = filters.file_name_reason(filename)
                if reason is not None:
                    reasons[(lang, f"file:{reason}")] += 1
                    continue
                full = os.path.join(dirpath, filename)
                if os.path.islink(full) and not _inside(full, str(root)):
                    reasons[(lang, "file:outside_root")] += 1
                    continue
                if dirpath in git_roots:
                    repo_dir, repo, sha = git_roots[dirpath]
                    rel = os.path.relpath(full, repo_dir)
                else:
                    rel_to_root = os.path.relpath(full, root)
                    sha = ""
                    if repo_unit == "root":
                        repo, rel = root.name, rel_to_root
                    elif os.sep in rel_to_root:
                        first, rel = rel_to_root.split(os.sep, 1)
                        repo = f"{root.name}/{first}"
                    else:
                        # A module at the top is a repository of its own (the stdlib's argparse.py).
                        repo, rel = f"{root.name}/{filename.rsplit('.', 1)[0]}", rel_to_root
                yield SourceFile(full, repo, rel.replace(os.sep, "/"), lang, sha)


def _record(src: SourceFile, fn: Function, docstring: str, doc_tokens: list[str]) -> dict[str, Any]:
    return {
        "repo": src.repo,
        "path": src.rel_path,
        "func_name": fn.name,
        "original_string": fn.code,
        "language": src.language,
        "code": fn.code,
        "code_tokens": fn.code_tokens,
        "docstring": docstring,
        "docstring_tokens": doc_tokens,
        "sha": src.sha,
        "url": f"{src.repo}/{src.rel_path}#L{fn.start_line}-L{fn.end_line}",
        "partition": "",
    }


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def read_source(path: str) -> tuple[str | None, str | None]:
    """(text, None) for a readable UTF-8 source file, else (None, why): too large, binary, not UTF-8..."""
    limit = filters.MAX_FILE_BYTES
    try:
        # Only regular files (after following links): opening a FIFO blocks until someone writes
        # to it, and a device such as /dev/zero never ends while its st_size says 0.
        info = os.stat(path)
        if not S_ISREG(info.st_mode):
            return None, "not_regular"
        if info.st_size > limit:
            return None, "too_large"
        # O_NONBLOCK: a file swapped for a FIFO after the check still cannot hang the open. The
        # bound holds for what is read, not for what st_size claims (/proc files say 0, a file
        # may grow meanwhile): read one byte past the limit to tell "at the limit" from "over".
        with open(path, "rb", opener=_open_nonblocking) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None, "broken_symlink"
    except OSError:
        return None, "unreadable"
    if len(data) > limit:
        return None, "too_large"
    if b"\0" in data:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    return text.removeprefix("\ufeff"), None


def extract_file(src: SourceFile) -> FileResult:
    """The corpus records of one file: documented functions, undocumented ones, and what was dropped."""
    result = FileResult()

    def count(key: str) -> None:
        result.reasons[(src.language, key)] += 1

    text, reason = read_source(src.path)
    if text is None:
        count(f"file:{reason}")
        return result
    source = text.encode("utf-8")
    reason = filters.content_reason(source)
    if reason is not None:
        count(f"file:{reason}")
        return result
    try:
        functions, had_error = parse_functions(source, src.language)
    except (ValueError, RecursionError) as exc:  # the parser gave up (e.g. timeout, odd input)
        count("file:parse_failed")
        log.info("could not parse %s: %s", src.path, exc)
        return result
    count("file:parsed")
    if had_error:
        count("file:syntax_error")
    for fn in functions:
        reason = filters.function_reason(fn, src.language)
        if reason is not None:
            count(f"function:{reason}")
            continue
        doc_tokens = filters.doc_summary_tokens(fn)
        if not fn.docstring.strip():
            result.unimodal.append(_record(src, fn, "", []))
        elif len(doc_tokens) < filters.MIN_DOC_TOKENS:
            count("function:doc_too_short")
        else:
            result.bimodal.append(_record(src, fn, fn.docstring, doc_tokens))
    return result


def extract_all(files: list[SourceFile], workers: int, progress: bool = True) -> FileResult:
    """Extract every file on `workers` processes (1: in this process), with a progress bar."""
    total = FileResult()
    bar = tqdm(total=len(files), unit="file", desc="extract", disable=not progress, dynamic_ncols=True)

    def absorb(part: FileResult) -> None:
        total.bimodal.extend(part.bimodal)
        total.unimodal.extend(part.unimodal)
        total.reasons.update(part.reasons)
        bar.update(1)
        bar.set_postfix(functions=len(total.bimodal) + len(total.unimodal), refresh=False)

    if workers <= 1 or len(files) < 2:
        for src in files:
            absorb(extract_file(src))
    else:
        # forkserver: workers start from a clean process (no parent threads or parsers copied),
        # quicker than spawn. A worker that dies (a crash in a parser) fails the run loudly
        # instead of hanging it.
        context = multiprocessing.get_context("forkserver" if sys.platform == "linux" else "spawn")
        try:
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for part in pool.map(extract_file, files, chunksize=4):
                    absorb(part)
        except BrokenProcessPool:
            raise RuntimeError("an extraction worker died; rerun with --workers 1 to see which file") from None
    bar.close()
    # Workers finish in any order: sort so that the output depends only on the input.
    key = lambda r: (r["repo"], r["path"], r["url"])  # noqa: E731
    total.bimodal.sort(key=key)
    total.unimodal.sort(key=key)
    return total
