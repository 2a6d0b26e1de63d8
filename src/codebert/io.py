"""Writing files so that a crash never leaves half of one: every output of every stage goes through here."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from codebert.errors import UserError


@contextmanager
def atomic_write(path: str | Path, binary: bool = False):
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    A crash or Ctrl-C midway leaves the previous file (or none), never half a file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # an output path the user cannot write to: say so, no traceback
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    # mkstemp creates the file private (0600); give it the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
