"""The quickstart end to end on a small generated source tree (the real one reads the stdlib)."""

from __future__ import annotations

import random
from pathlib import Path

from transformers import AutoModelForMaskedLM, AutoTokenizer

from codebert.cli import main

VERBS = ["parse", "format", "load", "merge", "split", "count", "sort", "filter", "render", "encode"]
NOUNS = ["memory size", "date string", "config file", "user list", "word counts", "path parts", "json text"]


def write_tree(root: Path) -> None:
    """30 small Python packages with documented and undocumented functions, none alike."""
    rng = random.Random(0)
    names = ["total", "items", "buffer", "index", "limit", "prefix", "cache", "offset", "width", "count", "table", "queue"]
    for p in range(30):
        lines = []
        for f in range(6):
            verb, noun = VERBS[(p + f) % len(VERBS)], NOUNS[(p * 3 + f) % len(NOUNS)]
            doc = f'    """{verb.capitalize()} the {noun} and return the result for package {p}."""\n' if f % 3 else ""
            a, b, c = rng.sample(names, 3)
            body = "".join(
                f"    {rng.choice(names)}_{i} = {a} {rng.choice('+-*')} {rng.randint(0, 99)} * {b}.{rng.choice(names)}({c})\n"
                for i in range(4)
            )
            lines.append(f"def {verb}_{noun.split()[0]}_{p}_{f}({a}, {b}, {c}):\n{doc}{body}    return {a}\n")
        (root / f"pkg{p}").mkdir(parents=True)
        (root / f"pkg{p}" / "core.py").write_text("\n\n".join(lines))


def test_quickstart_makes_every_artefact(tmp_path, capsys):
    write_tree(tmp_path / "src")
    code = main(["quickstart", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "qs"), "--vocab-size", "400",
                 "--pretrain-steps", "6", "--search-steps", "6", "--no-progress", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    for step in ("[1/7] corpus", "[2/7] tokenizer", "[3/7] generators", "[4/7] pre-training", "[5/7] code search",
                 "[6/7] index", "[7/7] example queries", "quickstart finished", "codebert serve"):
        assert step in out
    assert out.count("results for") == 3  # the three example queries, each with its results
    final = tmp_path / "qs" / "pretrain" / "final"
    AutoModelForMaskedLM.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)
    assert (tmp_path / "qs" / "generators" / "nl.npz").is_file()
    assert (tmp_path / "qs" / "search" / "best" / "search_model.json").is_file()
    assert (tmp_path / "qs" / "index" / "manifest.json").is_file()
    report = (tmp_path / "qs" / "report.md").read_text()
    assert "| pre-training (MLM+RTD) |" in report and "valid MRR" in report
    assert report.count("`parse a date string`") == 1 and "1. `" in report  # the queries and their answers
    assert "report     " in out
