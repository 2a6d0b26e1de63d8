"""Agreement of our extraction with csn6's on the functions both took from the CPython 3.11 stdlib.

csn6 (../shared/data/csn6) holds 1,890 functions of the CPython 3.11 standard library, extracted by
its own tree-sitter pipeline. We extract this interpreter's standard library and, for every csn6
function that we also found (same file path, qualified name and line span), compare docstring_tokens and
code_tokens. Prints the share of exact matches of each field and a few differences.

    python benchmarks/compare_with_csn6.py [--csn6 ../shared/data/csn6]
"""

from __future__ import annotations

import argparse
import sysconfig
from collections import Counter
from pathlib import Path

from codebert.corpus.extract import extract_file, walk
from codebert.corpus.jsonl import read_jsonl
from codebert.report import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csn6", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    opts = parser.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    theirs = {}
    for split in ("train", "valid", "test", "unimodal"):
        for r in read_jsonl(opts.csn6 / "python" / f"{split}.jsonl.gz"):
            if r["repo"].startswith("cpython"):
                theirs[(r["path"].removeprefix("Lib/"), r["func_name"], r["url"].rsplit("#", 1)[1])] = r
    ours = {}
    for src in walk([stdlib], ("python",), "root", Counter()):
        result = extract_file(src)
        for r in result.bimodal + result.unimodal:
            ours[(r["path"], r["func_name"], r["url"].rsplit("#", 1)[1])] = r
    common = sorted(set(theirs) & set(ours))
    rows, examples = [], []
    for field in ("docstring_tokens", "code_tokens"):
        same = sum(theirs[k][field] == ours[k][field] for k in common)
        rows.append([field, len(common), same, same / max(len(common), 1)])
        examples += [(field, k) for k in common if theirs[k][field] != ours[k][field]][:3]
    print(f"csn6 cpython functions: {len(theirs):,}; found by us with the same path, name and lines: {len(common):,} "
          f"({len(common) / max(len(theirs), 1):.1%})")
    print(format_table(["field", "compared", "identical", "share"], rows))
    missing = sorted(set(theirs) - set(ours))[:5]
    if missing:
        print("not found by us (first 5):", ", ".join(f"{p}:{n}#{lines}" for p, n, lines in missing))
    for field, key in examples:
        print(f"- {field} differs for {key[0]}:{key[1]}#{key[2]}\n    csn6: {theirs[key][field][:25]}\n    ours: {ours[key][field][:25]}")


if __name__ == "__main__":
    main()
