"""A query from the shell, as a user runs it: process start to printed results, lean path vs torch.

`codebert query INDEX TEXT` is run as a fresh process R times per engine and per query, in
alternation (so that a busy machine slows both alike):
  * onnx  -- the index's exported query encoder (ONNX Runtime + tokenizers; no torch import);
  * torch -- the model folder loaded through transformers (the path before the lean one).
Prints the wall time p50 / max per engine and their ratio, and checks that both engines give the
same top-k (ids in order) with scores equal to 1e-5. Target (issue 16): onnx p50 <= 1.5 s on 2 cores.

    python benchmarks/cold_query.py INDEX [--runs 5] [--k 10] [--threads 2] [--ranking auto|dense|lexical|hybrid]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from codebert.tables import format_table

QUERIES = ["parse a date string", "read a configuration file", "remove a directory tree recursively"]


def run_query(index: Path, text: str, engine: str, k: int, threads: int, ranking: str = "auto") -> tuple[float, dict]:
    # The installed `codebert` script, beside this Python: what a user types.
    command = [str(Path(sys.executable).parent / "codebert"), "query", str(index), text, "-k", str(k), "--engine", engine,
               "--threads", str(threads), "--ranking", ranking, "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ranking", default="auto", choices=["auto", "dense", "lexical", "hybrid"], help="codebert query --ranking")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"onnx": [], "torch": []}
    worst = 0.0
    same = True
    for _ in range(args.runs):
        for text in QUERIES:
            answers = {}
            for engine in times:
                seconds, answers[engine] = run_query(args.index, text, engine, args.k, args.threads, args.ranking)
                times[engine].append(seconds)
            lean, heavy = answers["onnx"]["results"], answers["torch"]["results"]
            same &= [r["id"] for r in lean] == [r["id"] for r in heavy]
            worst = max([worst] + [abs(a["score"] - b["score"]) for a, b in zip(lean, heavy)])
    rows = [[engine, len(t), f"{statistics.median(t):.2f}", f"{max(t):.2f}"] for engine, t in times.items()]
    print(format_table(["engine", "runs", "p50 wall s", "max wall s"], rows))
    ratio = statistics.median(times["torch"]) / statistics.median(times["onnx"])
    print(f"\ntorch / onnx (p50): {ratio:.1f}x; same top-{args.k} ids: {same}; largest score difference: {worst:.2e}")
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
