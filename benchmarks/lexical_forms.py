"""BM25 (the tool's FTS5 lexical index) in each word form, on csn6: how much the stems and the
query's stop words are worth, language by language, in the paper's groups of 1,000.

Each form indexes every group's 1,000 codes on their own and ranks the group's queries against
them (`lexical.FtsScorer`, what `codebert search evaluate --ranking lexical` runs in the current
form), so the rows differ only in how words are written:
  * words -- the sub-words as they are (the lexical index before 2026-12-08);
  * stems -- Snowball English stems on both sides, the query's Lucene stop words dropped (`lexical.FORM`).
Prints MRR per language and macro, and each form's gain over `words`. With --query-words N the
summaries are cut to N content words first (issue 25's short queries). About 40 s a form on one core.

With --latency N, also what each form costs a query: N training functions (all six languages)
indexed in each form, and --queries valid summaries ranked (top 100, hybrid's depth) one at a time
by FTS5 (`codebert query`'s path) and by the postings in memory (`Bm25Matrix`, the server's),
p50 and p99 per form, and the two paths' top 100 compared (the same rows and scores).

    python benchmarks/lexical_forms.py --data ../shared/data/csn6 [--split valid] [--query-words 4] [--latency 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

import numpy as np

from codebert.search.data import load_examples, short_queries
from codebert.search.lexical import FORMS, Bm25Matrix, FtsScorer, add, create, search
from codebert.search.scorers import group_mrr, groups_for
from codebert.tables import format_table

LANGUAGES = ["go", "java", "javascript", "php", "python", "ruby"]
ORDER = ("words", *[f for f in FORMS if f != "words"])  # the form before first: the others are measured against it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="CodeSearchNet-format folder (csn6)")
    parser.add_argument("--split", default="valid", help="split to rank (choose on valid; test once)")
    parser.add_argument("--group-size", type=int, default=1000, help="candidates per group (the paper's 1,000)")
    parser.add_argument("--max-groups", type=int, default=1, help="groups per language (0: all)")
    parser.add_argument("--query-words", type=int, default=0, help="cut each summary to this many content words (0: as they are)")
    parser.add_argument("--latency", type=int, default=0, help="also time queries over this many training functions (0: skip)")
    parser.add_argument("--queries", type=int, default=500, help="--latency: valid summaries to time")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder")

    mrr: dict[str, dict[str, float]] = {form: {} for form in ORDER}
    started = time.perf_counter()
    for language in LANGUAGES:
        examples = load_examples(args.data, args.split, [language])
        examples.queries = short_queries(examples.queries, args.query_words)
        groups = groups_for(len(examples), args.group_size, args.max_groups)
        for form in ORDER:
            mrr[form][language], _ = group_mrr(FtsScorer(examples, form), groups)
    rows = []
    for form in ORDER:
        macro = float(np.mean(list(mrr[form].values())))
        gain = macro - float(np.mean(list(mrr["words"].values())))
        rows.append([form, *[round(mrr[form][lang], 4) for lang in LANGUAGES], round(macro, 4), f"{gain:+.4f}"])
    print(format_table(["form", *LANGUAGES, "macro", "against words"], rows))
    print(f"{args.split}, groups of {args.group_size} (at most {args.max_groups or 'all'} a language), "
          f"query words {args.query_words or 'all'}: {time.perf_counter() - started:.0f} s")
    if args.latency:
        latency(args)


def latency(args) -> None:
    train = load_examples(args.data, "train")
    picked = np.random.default_rng(0).permutation(len(train))[: args.latency]
    codes = [train.codes[i] for i in picked]
    valid = load_examples(args.data, "valid")
    queries = [valid.queries[i] for i in np.random.default_rng(1).permutation(len(valid))[: args.queries]]
    queries = short_queries(queries, args.query_words)
    rows = []
    for form in ORDER:
        db = sqlite3.connect(":memory:")
        create(db, form)
        start = time.perf_counter()
        add(db, list(enumerate(codes, start=1)), form)
        written = time.perf_counter() - start
        start = time.perf_counter()
        matrix = Bm25Matrix(db, form)
        loaded = time.perf_counter() - start
        fts, postings, same = [], [], 0
        for query in queries:
            start = time.perf_counter()
            expected = search(db, query, 100, form=form)
            fts.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = matrix.search(query, 100)
            postings.append(time.perf_counter() - start)
            same += [round(s, 9) for _, s in got] == [round(s, 9) for _, s in expected]
        rows.append([form, f"{written:.1f}", f"{loaded:.1f}", *[f"{1000 * np.percentile(t, q):.2f}" for t in (fts, postings) for q in (50, 99)],
                     f"{same}/{len(queries)}"])
        db.close()
    print(format_table(["form", "index s", "postings s", "FTS5 p50 ms", "FTS5 p99 ms", "postings p50 ms", "postings p99 ms",
                        "same scores"], rows))
    print(f"{len(codes):,} training functions, {len(queries)} valid summaries (query words {args.query_words or 'all'}), top 100, one at a time")


if __name__ == "__main__":
    main()
