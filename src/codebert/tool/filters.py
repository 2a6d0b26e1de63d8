"""Path filters of a search (`--path GLOB`, `--exclude GLOB`; the API's `path`/`exclude`; the MCP tool's `path`).

A glob is matched against a function's file path relative to the root it was indexed under (for
a root that is one file: its name), and against the absolute path, so that `src/**`, `**/tests/**`,
`*.py` and `/home/me/repo/lib/**` all mean what they say. `**` spans folders, `*` and `?` stay
within one name, `[abc]` is a character class: the rules of git's pathspecs and of Python 3.13's
`glob.translate` (written here because Python 3.11's `fnmatch` lets `*` cross `/` and
`PurePath.match` has no `**`). A function is kept when it matches one --path glob (or there is
none) and no --exclude glob.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from codebert.errors import UserError

MAX_GLOBS = 32
MAX_GLOB_LENGTH = 300


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """The compiled regular expression of a glob; a malformed one is a UserError."""
    if not pattern or len(pattern) > MAX_GLOB_LENGTH or "\x00" in pattern:
        raise UserError(f"bad glob {pattern[:40]!r}: empty, longer than {MAX_GLOB_LENGTH} characters or with a NUL")
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")  # any number of folders, none included
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                raise UserError(f"bad glob {pattern!r}: '[' without a closing ']'")
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise UserError(f"bad glob {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class PathFilter:
    include: tuple[str, ...] = ()  # keep a function whose path matches one of these (none: every function)
    exclude: tuple[str, ...] = ()  # drop a function whose path matches one of these

    @staticmethod
    def of(include: list[str] | tuple[str, ...] | None = None, exclude: list[str] | tuple[str, ...] | None = None) -> PathFilter:
        """A checked filter: every glob compiled now, so a bad one is an error before any search."""
        include, exclude = tuple(include or ()), tuple(exclude or ())
        if len(include) + len(exclude) > MAX_GLOBS:
            raise UserError(f"at most {MAX_GLOBS} path globs")
        for pattern in include + exclude:
            glob_regex(pattern)
        return PathFilter(include, exclude)

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def admits(self, path: str, root: str) -> bool:
        forms = (relative_path(path, root), path)
        if self.include and not any(glob_regex(g).match(f) for g in self.include for f in forms):
            return False
        return not any(glob_regex(g).match(f) for g in self.exclude for f in forms)


def relative_path(path: str, root: str) -> str:
    """`path` relative to the indexed root it lies in; a root that is the file itself: its name."""
    if path == root:
        return PurePosixPath(path).name
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path
