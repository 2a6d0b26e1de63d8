"""Agreement of our extraction with csn6's, on the functions of packages that both extracted.

csn6 (../shared/data/csn6) was extracted from Debian, PyPI and npm packages and the CPython 3.11
standard library by its own tree-sitter pipeline. We extract a source tree (default: this
interpreter's standard library) and, for every csn6 function that we also found at the same place
(its file name, qualified name and line span), compare
docstring_tokens and code_tokens. Only csn6 functions in a file whose name one of our files
has are compared; a place can also match by chance in a same-named file of another package or
release, where the code then differs.

    python benchmarks/compare_with_csn6.py [TREE ...] [--csn6 DIR] [--languages python ...]
"""

from __future__ import annotations

import argparse
import sysconfig
from collections import Counter
from pathlib import Path

from codebert.corpus.extract import extract_all, walk
from codebert.corpus.jsonl import ALL_FILES, read_jsonl
from codebert.corpus.languages import DEFAULT_LANGUAGES
from codebert.tables import format_table


def place(record: dict) -> tuple[str, str, str]:
    return record["path"].rsplit("/", 1)[-1], record["func_name"], record["url"].rsplit("#", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*", type=Path, default=[Path(sysconfig.get_paths()["stdlib"])])
    parser.add_argument("--csn6", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    opts = parser.parse_args()
    files = list(walk(opts.trees, tuple(opts.languages), "top", Counter()))
    result = extract_all(files, workers=2, progress=False)
    ours = {place(r): r for r in result.bimodal + result.unimodal}
    our_files = {(r["language"], place(r)[0]) for r in result.bimodal + result.unimodal}
    rows, examples = [], []
    for lang in opts.languages:
        theirs = {}
        for split in ALL_FILES:
            for r in read_jsonl(opts.csn6 / lang / f"{split}.jsonl.gz"):
                if (lang, place(r)[0]) in our_files:
                    theirs[place(r)] = r
        common = [k for k in theirs if k in ours]
        same_doc = sum(theirs[k]["docstring_tokens"] == ours[k]["docstring_tokens"] for k in common)
        same_code = sum(theirs[k]["code_tokens"] == ours[k]["code_tokens"] for k in common)
        rows.append([lang, len(common), same_doc, same_code])
        examples += [k for k in common if theirs[k]["code_tokens"] != ours[k]["code_tokens"]][:2]
    print(format_table(["language", "functions at the same place", "same docstring_tokens", "same code_tokens"], rows))
    for key in examples:
        print("- code differs:", "/".join(key))


if __name__ == "__main__":
    main()
