"""The search tool's index: build, query, incremental updates, crash safety, long functions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from codebert.tool import index as index_mod
from codebert.cli import main as cli_main
from codebert.config import load_config
from codebert.errors import UserError
from codebert.tool.embed import TextEncoder, windows
from codebert.tool.query import QueryConfig, Reranker, query_main
from codebert.tool.store import IndexStore
from conftest import SAMPLES


def build(paths, model, out, **flags):
    return index_mod.main(load_config(index_mod.IndexConfig, None, {
        "paths": [str(p) for p in paths], "model": str(model), "out": str(out), "progress": "false", "threads": "1", **flags}))


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "samples"
    shutil.copytree(SAMPLES, root)
    return root


def test_index_then_query_finds_functions_with_their_location(tree, tiny_model_dir, tmp_path):
    figures = build([tree], tiny_model_dir, tmp_path / "idx")
    assert figures["functions"] > 20 and figures["files_encoded"] == figures["files_seen"] and figures["search"] == "exact"
    store = IndexStore(tmp_path / "idx")
    stats = store.stats()
    assert set(stats["per_language"]) >= {"python", "java", "go", "php", "ruby", "javascript"}
    result = query_main(load_config(QueryConfig, None, {
        "index": str(tmp_path / "idx"), "text": "parse a memory string", "k": "5", "threads": "1"}))
    hits = result["results"]
    assert len(hits) == 5 and all(h["path"].startswith(str(tree)) and h["start_line"] >= 1 for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["score"])
    only_go = query_main(load_config(QueryConfig, None, {
        "index": str(tmp_path / "idx"), "text": "pop from a stack", "k": "3", "language": "go", "threads": "1"}))
    assert only_go["results"] and {h["language"] for h in only_go["results"]} == {"go"}


def test_a_function_finds_itself_first(tree, tiny_model_dir, tmp_path):
    build([tree], tiny_model_dir, tmp_path / "idx", exact_limit="5")  # HNSW above 5 vectors
    store = IndexStore(tmp_path / "idx")
    assert store.manifest["search"] == "hnsw"
    g = store.manifest["generation"]
    vectors, ids = np.load(tmp_path / "idx" / f"vectors-{g}.npy"), np.load(tmp_path / "idx" / f"ids-{g}.npy")
    for row in range(0, len(ids), 7):
        assert store.search(vectors[row], 1)[0]["id"] == ids[row]


def test_reindexing_encodes_only_changed_files_and_drops_deleted_ones(tree, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    g1 = json.loads((out / "manifest.json").read_text())["generation"]
    old_ids = set(np.load(out / f"ids-{g1}.npy").tolist())
    (tree / "goproj" / "stack.go").unlink()
    memory = tree / "pyproj" / "pkg" / "memory.py"
    memory.write_text(memory.read_text() + "\n\ndef brand_new_helper(x):\n    return x * 2\n")
    second = build([tree], tiny_model_dir, out)
    assert second["files_encoded"] == 1 and second["files_deleted"] == 1
    store = IndexStore(out)
    paths = {row[0] for row in store.db.execute("SELECT path FROM files")}
    assert not any(p.endswith("stack.go") for p in paths)
    names = {row[0] for row in store.db.execute("SELECT name FROM functions")}
    assert "brand_new_helper" in names and "Stack.Pop" not in names
    new_ids = set(np.load(out / f"ids-{store.manifest['generation']}.npy").tolist())
    assert len(old_ids & new_ids) > 0.5 * len(old_ids)  # unchanged files kept their vectors
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("meta-")) == [f"meta-{g1 + 1}.sqlite"]
    third = build([tree], tiny_model_dir, out)
    assert third["files_encoded"] == 0 and third["functions_encoded"] == 0 and third["functions"] == second["functions"]


def test_a_crash_during_an_update_leaves_the_previous_index_usable(tree, tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    before = json.loads((out / "manifest.json").read_text())
    (tree / "pyproj" / "shout.py").write_text("def shout(s):\n    return s.upper()\n")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_mod, "build_faiss", crash)
    with pytest.raises(KeyboardInterrupt):
        build([tree], tiny_model_dir, out)
    assert json.loads((out / "manifest.json").read_text()) == before
    assert IndexStore(out).stats()["functions"] == before["functions"]


def test_long_functions_are_encoded_over_overlapping_windows(tiny_model_dir):
    ids = np.arange(25)
    parts = windows(ids, 10)
    assert [p[0] for p in parts] == [0, 5, 10, 15] and parts[-1][-1] == 24
    encoder = TextEncoder(tiny_model_dir, max_length=12, threads=1)
    long_text = " ".join(f"x{i} = y{i} + {i}" for i in range(40))
    vector = encoder.encode_code([long_text])[0]
    token_ids = np.array(encoder.tokenizer(long_text, add_special_tokens=False)["input_ids"])
    pieces = windows(token_ids, 10)
    assert len(pieces) > 2
    manual = encoder._encode_ids(pieces, 12, 8).sum(0)
    assert np.allclose(vector, manual / np.linalg.norm(manual), atol=1e-5)


def test_user_mistakes_are_one_line_errors(tree, tiny_model_dir, tmp_path, capsys):
    assert cli_main(["query", str(tmp_path / "nowhere"), "anything"]) == 2
    assert "not an index" in capsys.readouterr().err
    build([tree], tiny_model_dir, tmp_path / "idx")
    assert cli_main(["query", str(tmp_path / "idx"), "   ", "-k", "0"]) == 2
    err = capsys.readouterr().err
    assert "query is empty" in err and "-k" in err
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    assert cli_main(["index", str(tree), "--model", str(other), "--out", str(tmp_path / "idx"), "--no-progress"]) == 2
    assert "was built with" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory, tiny_model_dir):
    """A cross-encoder fine-tuned for a few steps from the tiny checkpoint."""
    from codebert.config import read_preset
    from codebert.search import finetune
    from conftest import CORPUS

    out = tmp_path_factory.mktemp("cross") / "run"
    finetune.main(load_config(finetune.SearchFinetuneConfig, read_preset("tiny", "search"), {
        "model": str(tiny_model_dir), "data": str(CORPUS), "out": str(out), "mode": "cross", "max_steps": "3",
        "valid_examples": "8", "progress": "false"}))
    return out / "best"


def test_rerank_reorders_the_vector_candidates_by_the_cross_encoder(tree, tiny_model_dir, cross_encoder_dir, tmp_path):
    build([tree], tiny_model_dir, tmp_path / "idx")
    flags = {"index": str(tmp_path / "idx"), "text": "parse a memory string", "threads": "1", "ranking": "dense"}
    plain = query_main(load_config(QueryConfig, None, {**flags, "k": "8"}))["results"]
    reranked = query_main(load_config(QueryConfig, None, {
        **flags, "k": "3", "rerank": str(cross_encoder_dir), "rerank_k": "8"}))["results"]
    assert len(reranked) == 3
    assert {h["id"] for h in reranked} <= {h["id"] for h in plain}  # re-ordered from the vector top 8
    scores = [h["score"] for h in reranked]
    assert scores == sorted(scores, reverse=True)
    by_id = {h["id"]: h["score"] for h in plain}
    assert all(h["vector_score"] == pytest.approx(by_id[h["id"]]) for h in reranked)
    # The cross-encoder's own scores, recomputed pair by pair from the code tokens the index keeps, give the same top 3.
    store = IndexStore(tmp_path / "idx")
    rows = store.functions([h["id"] for h in plain])
    assert all(row["tokens"] for row in rows.values())  # the code tokens the cross-encoder reads
    reranker = Reranker(str(cross_encoder_dir))
    again = reranker.rerank("parse a memory string", [{**rows[h["id"]], "score": h["score"]} for h in plain])
    assert [h["id"] for h in again[:3]] == [h["id"] for h in reranked]


def test_rerank_needs_a_cross_encoder(tree, tiny_model_dir, tmp_path, capsys):
    build([tree], tiny_model_dir, tmp_path / "idx")
    assert cli_main(["query", str(tmp_path / "idx"), "parse", "--rerank", str(tiny_model_dir)]) == 2
    assert "not a fine-tuned cross-encoder" in capsys.readouterr().err


def test_a_bert_style_sentence_transformers_folder_indexes_too(tree, tmp_path):
    """Not only RoBERTa: a BERT-style folder with its own tokenizer, special tokens and pooling file."""
    import torch
    from transformers import AutoModel, BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "minibert"
    words = sorted({w for p in tree.rglob("*.*") for w in p.read_text().lower().replace("(", " ").split() if w.isalpha()})
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words[:500]]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=505, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}))
    figures = build([tree], folder, tmp_path / "idx")
    assert figures["functions"] > 20
    hits = query_main(load_config(QueryConfig, None, {
        "index": str(tmp_path / "idx"), "text": "parse memory", "k": "3", "threads": "1"}))["results"]
    assert len(hits) == 3
    # The query vector is the model's mean-pooled, normalised output over [CLS] query [SEP].
    encoder = TextEncoder(folder)
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    batch = tokenizer(["parse memory"], return_tensors="pt")
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(folder)(**batch).last_hidden_state[0]
    expected = hidden.mean(0) / hidden.mean(0).norm()
    assert np.allclose(encoder.encode_queries(["parse memory"])[0], expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_the_lean_query_path_answers_as_the_torch_path_without_importing_torch(tree, tiny_model_dir, tiny_bert_dir, tmp_path, family):
    """`index` writes the query encoder as ONNX; `query` then loads neither torch nor transformers and
    gives the torch path's top-10 with the same scores (1e-5)."""
    import subprocess
    import sys

    from codebert.tool import query_encoder

    model = tiny_model_dir if family == "roberta" else tiny_bert_dir
    out = tmp_path / "idx"
    assert build([tree], model, out)["lean_queries"] is True
    store = IndexStore(out)
    lean = query_encoder.open_encoder(out, store.manifest["model"], threads=1)
    assert isinstance(lean, query_encoder.QueryEncoder)
    heavy = TextEncoder(model, threads=1)
    queries = ["parse a memory string", "pop from a stack", "x", "read the configuration file " * 20]
    fast, slow = lean.encode_queries(queries), heavy.encode_queries(queries)
    assert fast.shape == slow.shape and np.abs(fast - slow).max() < 1e-5
    for f, s in zip(fast, slow):
        a, b = store.search(f, 10), store.search(s, 10)
        assert [h["id"] for h in a] == [h["id"] for h in b]
        assert np.allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-5)
    probe = ("import sys; from codebert.cli import main; code = main(['query', sys.argv[1], 'pop from a stack', '-k', '3']); "
             "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print('HEAVY', heavy); sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "HEAVY []" in run.stdout and "3 results" in run.stdout


def test_an_index_without_a_lean_encoder_still_answers_with_torch(tree, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    shutil.rmtree(out / "query-encoder")  # an index made before the lean path
    result = query_main(load_config(QueryConfig, None, {"index": str(out), "text": "pop from a stack", "k": "3", "threads": "1"}))
    assert len(result["results"]) == 3


@pytest.mark.parametrize("exact_limit", ["250000", "5"])
def test_a_language_filter_returns_that_languages_nearest_and_an_unknown_one_is_an_error(tree, tiny_model_dir, tmp_path, exact_limit):
    """The filter runs inside the search (exact and HNSW): the top-k of one language are its k nearest."""
    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out, exact_limit=exact_limit)
    store = IndexStore(out)
    g = store.manifest["generation"]
    vectors, ids = np.load(out / f"vectors-{g}.npy"), np.load(out / f"ids-{g}.npy")
    go = {r[0] for r in store.db.execute("SELECT id FROM functions WHERE language = 'go'")}
    query = vectors[0]
    rows = [i for i, fid in enumerate(ids) if int(fid) in go]
    expected = [int(ids[i]) for i in sorted(rows, key=lambda i: -float(vectors[i] @ query))][:3]
    got = store.search(query, 3, "go")
    assert [r["id"] for r in got] == expected and {r["language"] for r in got} == {"go"}
    batch = store.search_many(np.stack([query, query]), 3, ["go", None])
    assert [r["id"] for r in batch[0]] == expected and len(batch[1]) == 3
    with pytest.raises(UserError, match="klingon: not in this index.*go"):
        store.search(query, 3, "klingon")


OVERLOADED = '''from typing import overload


class Reader:
    @overload
    def read(self, n: int) -> bytes: ...

    @overload
    def read(self, n: None) -> str:
        """Read the whole stream as text."""

    def read(self, n=None):
        """Read n bytes, or everything as text."""
        data = self.raw.read(n)
        return data if n is not None else data.decode()
'''


def test_only_regular_files_inside_the_roots_are_indexed_and_stubs_are_not(tiny_model_dir, tmp_path):
    import os

    from test_extract import deadline

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.py").write_text("def leaked_secret(token):\n    value = token * 2\n    return value\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "reader.py").write_text(OVERLOADED)
    os.mkfifo(root / "pipe.py")  # opening it would wait for a writer forever
    (root / "zero.py").symlink_to("/dev/zero")  # endless, its st_size is 0
    (root / "link.py").symlink_to(elsewhere / "secret.py")  # outside the indexed root
    with deadline(120):
        figures = build([root], tiny_model_dir, tmp_path / "idx")
    assert figures["files_seen"] == 1 and figures["files_skipped"] == 3
    store = IndexStore(tmp_path / "idx")
    assert [row[0] for row in store.db.execute("SELECT path FROM files")] == [str(root / "reader.py")]
    # The two @overload signatures take no result slot: only the implementation is there.
    assert [tuple(row) for row in store.db.execute("SELECT name, start_line FROM functions")] == [("Reader.read", 12)]


def test_a_full_disk_during_an_update_is_one_line_and_keeps_the_index(tree, tiny_model_dir, tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "idx"
    build([tree / "pyproj"], tiny_model_dir, out)
    before = json.loads((out / "manifest.json").read_text())
    (tree / "pyproj" / "shout.py").write_text("def shout(s):\n    t = s.upper()\n    return t + '!'\n")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    args = ["index", str(tree / "pyproj"), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress", "--threads", "1"]
    assert cli_main(args) == 2
    assert capsys.readouterr().err == "codebert: error: No space left on device\n"
    assert json.loads((out / "manifest.json").read_text()) == before  # the previous generation still serves
    assert IndexStore(out).stats()["functions"] == before["functions"]


def test_an_index_missing_its_generation_files_says_which_and_what_to_do(tree, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "idx"
    build([tree / "pyproj"], tiny_model_dir, out)
    g = json.loads((out / "manifest.json").read_text())["generation"]
    (out / f"faiss-{g}.index").unlink()
    assert cli_main(["query", str(out), "parse memory"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"faiss-{g}.index is missing" in err and "remove the folder and index again" in err


def test_a_traced_encoder_gives_the_modules_vectors(tiny_model_dir, tiny_bert_dir):
    """The server's TorchScript trace (frozen) encodes queries of any batch and length as the module does."""
    for model in (tiny_model_dir, tiny_bert_dir):
        eager = TextEncoder(model, threads=1)
        traced = TextEncoder(model, threads=1)
        assert traced.trace() and traced.forward is not traced.model
        queries = ["x", "parse a memory string", "read the configuration file " * 20, "pop", "sort numbers in place"]
        assert np.abs(traced.encode_queries(queries) - eager.encode_queries(queries)).max() < 1e-5
        assert np.abs(traced.encode_queries(queries[:1]) - eager.encode_queries(queries[:1])).max() < 1e-5


# ------------------------------------------------------------------------------- lexical, hybrid
def ranked(out, text, ranking, **flags):
    return query_main(load_config(QueryConfig, None, {"index": str(out), "text": text, "threads": "1", "ranking": ranking, **flags}))


def test_the_lexical_index_follows_every_update_and_finds_identifiers(tree, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    store = IndexStore(out)
    lexical_rows = store.db.execute("SELECT COUNT(*) FROM lexical").fetchone()[0]
    assert store.has_lexical and lexical_rows == store.manifest["functions"]
    memory = tree / "pyproj" / "pkg" / "memory.py"
    memory.write_text(memory.read_text() + "\n\ndef frobnicate_widget_cache(x):\n    return x * 2\n")
    (tree / "goproj" / "stack.go").unlink()
    build([tree], tiny_model_dir, out)
    store = IndexStore(out)
    assert store.db.execute("SELECT COUNT(*) FROM lexical").fetchone()[0] == store.manifest["functions"]
    assert store.db.execute("SELECT COUNT(*) FROM lexical WHERE rowid NOT IN (SELECT id FROM functions)").fetchone()[0] == 0
    # camelCase in the query, snake_case in the code: the sub-words meet
    hits = ranked(out, "frobnicateWidget", "lexical", k="3")["results"]
    assert hits[0]["name"] == "frobnicate_widget_cache" and hits[0]["lexical_score"] > 0
    in_java = ranked(out, "frobnicate widget parse string", "lexical", language="java", k="50")["results"]
    assert in_java and {h["language"] for h in in_java} == {"java"}  # the filter runs inside the lexical search


def test_hybrid_ranking_fuses_both_and_its_extremes_are_each_ranker(tree, tiny_model_dir, tmp_path):
    from codebert.tool.store import ZERO_SHOT_RANKING, Ranking

    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    store = IndexStore(out)
    assert store.ranking == ZERO_SHOT_RANKING == Ranking("hybrid", "sum", 0.3)  # no choice recorded: the zero-shot default
    vector = TextEncoder(str(tiny_model_dir), threads=1).encode_queries(["parse a memory string"])
    dense = [h["id"] for h in store.rank_many(vector, ["parse a memory string"], 8, [None], Ranking("dense"))[0]]
    only_vectors = store.rank_many(vector, ["parse a memory string"], 8, [None], Ranking("hybrid", "sum", 0.0))[0]
    assert [h["id"] for h in only_vectors] == dense  # weight 0: the vectors' order
    lexical = store.rank_many(vector, ["parse a memory string"], 8, [None], Ranking("lexical"))[0]
    only_words = store.rank_many(vector, ["parse a memory string"], 8, [None], Ranking("hybrid", "sum", 1.0))[0]
    assert [h["lexical_score"] for h in only_words][: len(lexical)] == pytest.approx([h["lexical_score"] for h in lexical])
    for fusion in ("rrf", "sum"):
        hits = store.rank_many(vector, ["parse a memory string"], 5, [None], Ranking("hybrid", fusion, 0.5))[0]
        assert len(hits) == 5 and hits == sorted(hits, key=lambda h: -h["score"])
        assert all({"vector_score", "lexical_score"} <= set(h) for h in hits)
    # the command line ranks as the index records unless told otherwise
    assert ranked(out, "parse a memory string", "auto")["ranking"] == ZERO_SHOT_RANKING.as_dict()
    assert [h["id"] for h in ranked(out, "parse a memory string", "auto", k="5")["results"]] == \
        [h["id"] for h in store.rank_many(vector, ["parse a memory string"], 5, [None], ZERO_SHOT_RANKING)[0]]


def test_the_models_chosen_ranking_becomes_the_indexs_default(tree, tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "search_model.json").write_text(json.dumps({"mode": "bi", "ranking": "hybrid", "fusion": "sum", "lexical_weight": 0.25}))
    build([tree], model, tmp_path / "idx")
    assert ranked(tmp_path / "idx", "parse a memory string", "auto")["ranking"] == {"ranking": "hybrid", "fusion": "sum", "lexical_weight": 0.25}
    assert IndexStore(tmp_path / "idx").stats()["ranking"]["lexical_weight"] == 0.25
    # a model whose choice on valid was dense: dense by default, and hybrid asked for is RRF (no weight chosen)
    (model / "search_model.json").write_text(json.dumps({"mode": "bi", "ranking": "dense"}))
    build([tree], model, tmp_path / "idx2")
    assert ranked(tmp_path / "idx2", "parse a memory string", "auto")["ranking"]["ranking"] == "dense"
    assert ranked(tmp_path / "idx2", "parse a memory string", "hybrid")["ranking"] == {"ranking": "hybrid", "fusion": "rrf", "lexical_weight": 0.0}


def test_an_index_made_before_the_lexical_index_gains_one_on_update_and_says_so_before(tree, tiny_model_dir, tmp_path, capsys):
    import sqlite3

    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    g = json.loads((out / "manifest.json").read_text())["generation"]
    db = sqlite3.connect(out / f"meta-{g}.sqlite")
    db.execute("DROP TABLE lexical")
    db.commit()
    db.close()
    manifest = json.loads((out / "manifest.json").read_text())
    for recorded in ("files", "checksums"):  # an index that old recorded neither
        del manifest[recorded]
    (out / "manifest.json").write_text(json.dumps(manifest))
    code = cli_main(["query", str(out), "parse a memory string", "--ranking", "lexical"])
    assert code == 2 and "no lexical index" in capsys.readouterr().err
    assert ranked(out, "parse a memory string", "dense")["results"]
    build([tree], tiny_model_dir, out)  # nothing changed: the update adds the lexical index for what is there
    store = IndexStore(out)
    assert store.db.execute("SELECT COUNT(*) FROM lexical").fetchone()[0] == store.manifest["functions"]
    assert ranked(out, "parse memory", "lexical")["results"]


def test_an_index_written_before_stems_is_queried_in_its_own_words_until_an_update_rewrites_it(tree, tiny_model_dir, tmp_path, caplog):
    import sqlite3

    from codebert.search import lexical

    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    assert IndexStore(out).lexical_form == "stems"
    g = json.loads((out / "manifest.json").read_text())["generation"]
    db = sqlite3.connect(out / f"meta-{g}.sqlite")  # the lexical index as an index made before the stems had it
    db.execute("DROP TABLE lexical")
    db.execute("DROP TABLE lexical_form")
    db.execute(lexical.SCHEMA)
    lexical.add(db, db.execute("SELECT id, name || ' ' || text FROM functions").fetchall(), form="words")
    db.commit()
    db.close()
    manifest = json.loads((out / "manifest.json").read_text())
    for recorded in ("files", "checksums"):  # the file changed under them (an index that old recorded neither)
        del manifest[recorded]
    (out / "manifest.json").write_text(json.dumps(manifest))
    store = IndexStore(out)
    assert store.lexical_form == "words"
    assert ranked(out, "parse memory string", "lexical")["results"]  # its words as written: queried as such
    store.load_lexical_matrix()  # the server's postings, in the same words
    assert [i for i, _ in store.lexical_hits("parse memory string", 5, None)] == \
        [i for i, _ in IndexStore(out).lexical_hits("parse memory string", 5, None)]
    assert not ranked(out, "parsed memories", "lexical")["results"]  # inflections do not meet in words
    build([tree], tiny_model_dir, out)  # nothing changed: the update rewrites the words as stems
    assert "rewriting the lexical index's words as stems (they were words)" in caplog.text
    store = IndexStore(out)
    assert store.lexical_form == "stems"
    assert store.db.execute("SELECT COUNT(*) FROM lexical").fetchone()[0] == store.manifest["functions"]
    assert ranked(out, "parsed memories", "lexical")["results"][0]["name"] == ranked(out, "parse memory", "lexical")["results"][0]["name"]


# ------------------------------------------------------------------------------ a damaged index
def _damage(path, how):
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: len(data) // 2])
    else:  # noise of the same size: only reading it can tell
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))


@pytest.mark.parametrize("name, how", [("vectors-{g}.npy", "cut"), ("ids-{g}.npy", "noise"), ("meta-{g}.sqlite", "noise"),
                                       ("meta-{g}.sqlite", "cut"), ("faiss-{g}.index", "cut")])
def test_a_damaged_index_is_one_line_naming_the_file_and_a_reindex_recovers(tree, tiny_model_dir, tmp_path, capsys, name, how):
    out = tmp_path / "idx"
    build([tree / "pyproj"], tiny_model_dir, out, exact_limit="5" if name.startswith("faiss") else "100000")
    manifest = json.loads((out / "manifest.json").read_text())
    g = manifest["generation"]
    assert set(manifest["files"]) == {f"meta-{g}.sqlite", f"faiss-{g}.index", f"vectors-{g}.npy", f"ids-{g}.npy"}
    before = [h["id"] for h in ranked(out, "parse a memory string", "dense", k="3")["results"]]
    _damage(out / name.format(g=g), how)
    for command in (["query", str(out), "parse a memory string", "--threads", "1"],
                    ["query", str(out), "parse a memory string", "--threads", "1", "--ranking", "lexical"]):
        assert cli_main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "damaged index" in err and "codebert index" in err, err
        assert name.format(g=g) in err  # a small index: every file has its checksum
    figures = build([tree / "pyproj"], tiny_model_dir, out)  # the same paths again: rebuilt, not patched
    assert figures["functions_encoded"] == figures["functions"] > 0
    assert [h["id"] for h in ranked(out, "parse a memory string", "dense", k="3")["results"]] != [] and len(before) == 3
    assert not (out / name.format(g=g)).exists()  # the damaged generation's files are gone


def test_an_index_from_before_sizes_were_recorded_still_opens(tree, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    build([tree / "pyproj"], tiny_model_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert ranked(out, "parse a memory string", "dense", k="3")["results"]


# ------------------------------------------------------------------------------- path filters
def test_globs_follow_git_pathspec_rules():
    from codebert.tool.filters import PathFilter, glob_regex

    assert glob_regex("src/**").match("src/a/b.py") and not glob_regex("src/*").match("src/a/b.py")
    assert glob_regex("**/tests/**").match("tests/x.py") and glob_regex("**/tests/**").match("a/tests/b/c.py")
    assert glob_regex("*.py").match("x.py") and not glob_regex("*.py").match("a/x.py")
    assert glob_regex("**/*.py").match("a/x.py") and glob_regex("f?o[0-9].go").match("foo1.go")
    assert not glob_regex("[!a]x").match("ax") and glob_regex("[!a]x").match("bx")
    keep = PathFilter.of(["pkg/**"], ["**/memory.py"])
    assert keep.admits("/r/pkg/a.py", "/r") and not keep.admits("/r/pkg/memory.py", "/r") and not keep.admits("/r/b.py", "/r")
    assert PathFilter.of(["/r/pkg/**"]).admits("/r/pkg/a.py", "/r")  # absolute globs too
    for bad in ("[abc", ""):
        with pytest.raises(UserError, match="bad glob"):
            PathFilter.of([bad])


@pytest.mark.parametrize("ranking", ["dense", "lexical", "hybrid"])
@pytest.mark.parametrize("exact_limit", ["100000", "5"])
def test_path_filters_keep_only_matching_files_in_every_ranking(tree, tiny_model_dir, tmp_path, ranking, exact_limit):
    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out, exact_limit=exact_limit)
    everything = ranked(out, "parse a memory string pop stack", ranking, k="50")["results"]
    only_py = ranked(out, "parse a memory string pop stack", ranking, k="50", path=["**/*.py"])["results"]
    assert only_py and all(r["path"].endswith(".py") for r in only_py)
    assert [r["id"] for r in only_py] == [r["id"] for r in everything if r["path"].endswith(".py")][: len(only_py)] or ranking == "hybrid"
    no_memory = ranked(out, "parse a memory string", ranking, k="50", exclude=["**/memory.py"])["results"]
    assert no_memory is not None and not any(r["path"].endswith("/memory.py") for r in no_memory)
    assert ranked(out, "parse a memory string", ranking, k="5", path=["nowhere/**"])["results"] == []
    for r in only_py:  # the shared result shape: path:start-end an editor opens
        assert r["location"] == f"{r['path']}:{r['start_line']}-{r['end_line']}" and "snippet" in r


def test_a_store_answers_each_path_filter_the_same_after_others_have_pushed_it_out(tree, tiny_model_dir, tmp_path, monkeypatch):
    """The server's store keeps what each path filter admits (ids, and rows of the vectors and the
    postings) for the last few filters only: a filter seen again after others pushed it out is
    worked out anew, with the same answers as a store that never saw another."""
    from codebert.tool import store as store_mod
    from codebert.tool.filters import PathFilter
    from codebert.tool.store import Ranking

    out = tmp_path / "idx"
    build([tree], tiny_model_dir, out)
    monkeypatch.setattr(store_mod, "FILTERS_KEPT", 2)
    served = IndexStore(out)
    served.load_lexical_matrix()  # lexical rows from the postings, as `codebert serve` ranks
    vector = np.ascontiguousarray(served.exact[0][:1] + 0.01, dtype=np.float32)
    filters = [PathFilter.of(["**/*.py"]), PathFilter.of([], ["**/memory.py"]), PathFilter.of(["**/*.go"]), PathFilter.of(["nowhere/**"])]
    rankings = [Ranking("dense"), Ranking("lexical"), Ranking("hybrid", "sum", 0.3)]

    def answers(store, paths):
        return [[r["id"] for r in store.rank_many(vector, ["parse a memory string pop stack"], 20, [None], how, paths)[0]]
                for how in rankings]

    first = {paths: answers(served, paths) for paths in filters}
    assert first[filters[0]] != first[filters[1]] and first[filters[3]] == [[], [], []]
    for paths in reversed(filters):  # each one again, after the others have pushed it out
        fresh = IndexStore(out)  # FTS5's own rows, and a store that has seen this filter only
        assert answers(served, paths) == first[paths] == answers(fresh, paths)
    assert len(served._allowed) <= 2 and len(served._admitted) <= 4


def test_a_bad_glob_is_one_line(tree, tiny_model_dir, tmp_path, capsys):
    build([tree / "pyproj"], tiny_model_dir, tmp_path / "idx")
    assert cli_main(["query", str(tmp_path / "idx"), "parse", "--path", "src/[abc"]) == 2
    err = capsys.readouterr().err
    assert "bad glob 'src/[abc'" in err and "Traceback" not in err  # the configuration's problems, one line each
    assert cli_main(["query", str(tmp_path / "idx"), "parse", "--path", "**/*.py", "--path", "**/*.go", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {r["path"][-3:] for r in printed["results"]} <= {".py", ".go"}  # repeated: both kept


def test_index_exclude_leaves_out_matching_files_and_drops_them_from_an_existing_index(tree, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    first = build([tree], tiny_model_dir, out)
    assert first["files_excluded"] == 0
    second = build([tree], tiny_model_dir, out, exclude=["**/*.go", "javaproj/**"])
    assert second["files_excluded"] == 2 and second["files_deleted"] == 2
    paths = {row[0] for row in IndexStore(out).db.execute("SELECT path FROM files")}
    assert paths and not any(p.endswith((".go", ".java")) for p in paths)
    assert IndexStore(out).db.execute("SELECT COUNT(*) FROM lexical").fetchone()[0] == second["functions"]


def test_watch_reindexes_a_file_when_it_changes(tree, tiny_model_dir, tmp_path):
    import threading
    import time

    out = tmp_path / "idx"
    done = {}
    worker = threading.Thread(target=lambda: done.update(build([tree], tiny_model_dir, out, watch="true", watch_updates="1")))
    worker.start()
    for _ in range(600):  # the first pass, then the watcher starts
        if (out / "manifest.json").is_file():
            break
        time.sleep(0.1)
    time.sleep(1.5)
    (tree / "pyproj" / "pkg" / "fresh.py").write_text("def freshly_written_helper(x):\n    return x + 1\n")
    worker.join(timeout=120)
    assert not worker.is_alive() and done["updates"] == 1 and done["files_encoded"] == 1
    names = {row[0] for row in IndexStore(out).db.execute("SELECT name FROM functions")}
    assert "freshly_written_helper" in names


# ------------------------------------------------------------------------------- the Milvus store
def test_a_milvus_lite_store_answers_as_the_local_store_and_follows_updates(tree, tiny_model_dir, tmp_path):
    from codebert.tool import milvus_store

    local, remote = tmp_path / "local", tmp_path / "milvus"
    build([tree], tiny_model_dir, local)
    build([tree], tiny_model_dir, remote, store="milvus")
    manifest = json.loads((remote / "manifest.json").read_text())
    assert manifest["store"] == "milvus" and (remote / "milvus.db").exists() and not list(remote.glob("faiss-*"))
    for ranking in ("dense", "hybrid"):
        for flags in ({}, {"language": "python"}, {"path": ["**/*.java", "**/*.go"]}):
            a = ranked(local, "parse a memory string", ranking, k="5", **flags)["results"]
            b = ranked(remote, "parse a memory string", ranking, k="5", **flags)["results"]
            assert [r["id"] for r in a] == [r["id"] for r in b] and a, (ranking, flags)
            assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-5)
    (tree / "pyproj" / "pkg" / "extra.py").write_text("def milvus_sees_this(x):\n    return x\n")
    second = build([tree], tiny_model_dir, remote, store="milvus")
    assert second["files_encoded"] == 1
    manifest = json.loads((remote / "manifest.json").read_text())
    collections = milvus_store.client(manifest["milvus"]["uri"]).list_collections()
    assert [c for c in collections if c.startswith(manifest["milvus"]["prefix"])] == [manifest["milvus"]["collection"]]  # the old one dropped
    # the new function's vector is in the new collection: a hybrid query fetches it for the fusion
    hits = ranked(remote, "milvus sees this", "hybrid", k="3")["results"]
    assert hits[0]["name"] == "milvus_sees_this" and hits[0]["vector_score"] != 0
    assert ranked(local, "x", "dense", k="50")["results"] and len(ranked(remote, "x", "dense", k="50")["results"]) == second["functions"]


def test_the_store_of_an_index_is_fixed_when_it_is_made(tree, tiny_model_dir, tmp_path, capsys):
    build([tree / "goproj"], tiny_model_dir, tmp_path / "idx")
    assert cli_main(["index", str(tree / "goproj"), "--model", str(tiny_model_dir), "--out", str(tmp_path / "idx"),
                     "--store", "milvus", "--no-progress"]) == 2
    assert "index into a new folder to use --store milvus" in capsys.readouterr().err
