"""Extraction throughput: the CPython standard library (or any PATH) in files/s and functions/s.

Measured in one run, on the same files:
  parse only   tree-sitter parsing alone, one process: the floor that extraction builds on
  serial       our extraction (read, check, parse, walk, filter, tokens) in one process
  parallel     the same on every core (what `codebert corpus extract` does)
  full stage   `codebert corpus extract` end to end: + de-duplication, split, leakage, writing
Target (issue 2): the standard library in under 30 s on our 2 cores.

    python benchmarks/extract_throughput.py [PATH ...] [--languages python ...]
"""

from __future__ import annotations

import argparse
import os
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

from codebert.corpus import build
from codebert.corpus.extract import extract_all, read_source, walk
from codebert.corpus.languages import DEFAULT_LANGUAGES, parser
from codebert.tables import format_table

TARGET_SECONDS = 30.0


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("paths", nargs="*", type=Path, default=[Path(sysconfig.get_paths()["stdlib"])])
    args.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    opts = args.parse_args()
    cores = os.cpu_count() or 1
    files = list(walk(opts.paths, tuple(opts.languages), "top", Counter()))
    size_mb = sum(os.path.getsize(f.path) for f in files) / 1e6
    print(f"{len(files):,} source files, {size_mb:.1f} MB, under {', '.join(map(str, opts.paths))}; {cores} cores")

    start = time.perf_counter()
    for f in files:
        text, _ = read_source(f.path)
        if text is not None:
            parser(f.language).parse(text.encode("utf-8"))
    parse_s = time.perf_counter() - start

    rows = []
    for label, workers in (("serial", 1), (f"parallel ({cores} processes)", cores)):
        start = time.perf_counter()
        result = extract_all(files, workers, progress=False)
        seconds = time.perf_counter() - start
        functions = len(result.bimodal) + len(result.unimodal)
        rows.append([label, seconds, len(files) / seconds, functions / seconds])

    with tempfile.TemporaryDirectory() as out:
        cfg = build.ExtractConfig(paths=opts.paths, out=Path(out), languages=opts.languages, progress=False)
        start = time.perf_counter()
        figures = build.main(cfg)
        full_s = time.perf_counter() - start
    kept = sum(sum(c.values()) for c in figures["counts"].values())
    rows.insert(0, ["parse only (1 process)", parse_s, len(files) / parse_s, "-"])
    rows.append([f"full stage ({cores} processes)", full_s, len(files) / full_s, "-"])
    print(format_table(["run", "seconds", "files/s", "functions/s"], rows))
    serial_s, parallel_s = rows[1][1], rows[2][1]
    print(f"parallel / serial speed-up: {serial_s / parallel_s:.2f}x; extraction / parse-only time: {serial_s / parse_s:.2f}x")
    print(f"full stage: {full_s:.1f} s for {kept:,} kept records "
          f"({'meets' if full_s < TARGET_SECONDS else 'MISSES'} the {TARGET_SECONDS:.0f} s target)")


if __name__ == "__main__":
    main()
