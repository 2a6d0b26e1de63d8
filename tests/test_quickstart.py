"""The quickstart end to end on a small generated source tree (the real one reads the stdlib)."""

from __future__ import annotations

import json

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


def test_quickstart_from_scratch_makes_every_artefact(tmp_path, capsys):
    write_tree(tmp_path / "src")
    code = main(["quickstart", "--init", "none", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "qs"),
                 "--vocab-size", "400", "--pretrain-steps", "6", "--search-steps", "6", "--no-progress", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    for step in ("[1/8] corpus", "[2/8] tokenizer: byte-level BPE", "[3/8] generators", "[4/8] pre-training", "[5/8] code search",
                 "[6/8] test MRR", "[7/8] index", "[8/8] example queries", "quickstart finished", "codebert serve"):
        assert step in out
    assert out.count("results for") == 3  # the three example queries, each with its results
    final = tmp_path / "qs" / "pretrain" / "final"
    AutoModelForMaskedLM.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)
    assert (tmp_path / "qs" / "generators" / "nl.npz").is_file()
    assert (tmp_path / "qs" / "search" / "best" / "search_model.json").is_file()
    assert (tmp_path / "qs" / "index" / "manifest.json").is_file()
    report = (tmp_path / "qs" / "report.md").read_text()
    assert "| pre-training (MLM+RTD, from scratch) |" in report and "valid MRR" in report
    assert "| test ranking: fine-tuned bi-encoder |" in report
    assert report.count("`parse a date string`") == 1 and "1. `" in report  # the queries and their answers
    assert "report     " in out
    assert "no backbone to start from (--init none)" in report and "Ranking on the valid split" in report
    chosen = json.loads((tmp_path / "qs" / "search" / "best" / "search_model.json").read_text())["ranking"]
    assert json.loads((tmp_path / "qs" / "index" / "manifest.json").read_text())["ranking"]["ranking"] == chosen


def test_quickstart_continues_a_bert_family_backbone_on_a_given_corpus(tmp_path, capsys, tiny_bert_dir):
    """The default path (continue from a pre-trained encoder), with a tiny BERT in MiniLM's place and
    `--data` in place of extraction: no index without --source, the backbone's zero-shot row beside ours."""
    from safetensors import safe_open

    from conftest import CORPUS

    code = main(["quickstart", "--init", str(tiny_bert_dir), "--data", str(CORPUS), "--out", str(tmp_path / "qs"),
                 "--pretrain-steps", "3", "--search-steps", "3", "--no-progress", "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    for step in ("[1/6] corpus", "[2/6] tokenizer: the backbone's own", "[4/6] pre-training: MLM+RTD continued from",
                 "[6/6] test MRR", "as it came: macro MRR", "Index your code"):
        assert step in out
    final = tmp_path / "qs" / "pretrain" / "final"
    AutoModelForMaskedLM.from_pretrained(final)
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        assert "bert.embeddings.word_embeddings.weight" in set(f.keys())
    assert AutoTokenizer.from_pretrained(final).cls_token == "[CLS]"
    assert not (tmp_path / "qs" / "index").exists() and not (tmp_path / "qs" / "tokenizer").exists()
    report = (tmp_path / "qs" / "report.md").read_text()
    assert "continued from" in report and report.count("| test ranking:") == 2
    # the search model starts from the backbone as it came (measured best on valid), and says so
    assert f"fine-tuned from `{tiny_bert_dir}`" in report and "measured best on valid" in report
    card = (tmp_path / "qs" / "search" / "best" / "README.md").read_text()
    assert f"base_model: \"{tiny_bert_dir}\"" in card
    st = __import__("importlib").util.find_spec("sentence_transformers")
    if st is not None:  # the bench extra: the folder opens as a sentence-transformers model and encodes as ours
        import numpy as np
        from sentence_transformers import SentenceTransformer

        from codebert.tool.embed import TextEncoder

        best = tmp_path / "qs" / "search" / "best"
        theirs = SentenceTransformer(str(best), device="cpu").encode(["parse a memory string"])
        ours = TextEncoder(best).encode_queries(["parse a memory string"])
        assert np.allclose(theirs, ours, atol=1e-4)


def test_quickstart_defaults_to_the_packaged_minilm():
    from codebert.backbone import PACKAGED_MINILM
    from codebert.experiments.quickstart import QuickstartConfig

    assert QuickstartConfig().init == PACKAGED_MINILM and not QuickstartConfig().from_scratch
    assert QuickstartConfig(init="none").from_scratch


def test_a_finished_runs_step_checkpoints_go_and_its_models_stay(tmp_path):
    from codebert.experiments.quickstart import drop_checkpoints

    for name in ("step-00000025", "step-00000050", "final", "best"):
        (tmp_path / "run" / name).mkdir(parents=True)
        (tmp_path / "run" / name / "model.safetensors").write_text("x")
    (tmp_path / "run" / "metrics.jsonl").write_text("{}")
    drop_checkpoints(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best", "final", "metrics.jsonl"]
