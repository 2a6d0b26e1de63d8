"""The search tool's index: build, query, incremental updates, crash safety, long functions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from codebert import index as index_mod
from codebert.cli import main as cli_main
from codebert.config import load_config
from codebert.encoder import TextEncoder, windows
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
    store = index_mod.IndexStore(tmp_path / "idx")
    stats = store.stats()
    assert set(stats["per_language"]) >= {"python", "java", "go", "php", "ruby", "javascript"}
    result = index_mod.query_main(load_config(index_mod.QueryConfig, None, {
        "index": str(tmp_path / "idx"), "text": "parse a memory string", "k": "5", "threads": "1"}))
    hits = result["results"]
    assert len(hits) == 5 and all(h["path"].startswith(str(tree)) and h["start_line"] >= 1 for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["score"])
    only_go = index_mod.query_main(load_config(index_mod.QueryConfig, None, {
        "index": str(tmp_path / "idx"), "text": "pop from a stack", "k": "3", "language": "go", "threads": "1"}))
    assert only_go["results"] and {h["language"] for h in only_go["results"]} == {"go"}


def test_a_function_finds_itself_first(tree, tiny_model_dir, tmp_path):
    build([tree], tiny_model_dir, tmp_path / "idx", exact_limit="5")  # HNSW above 5 vectors
    store = index_mod.IndexStore(tmp_path / "idx")
    assert store.manifest["search"] == "hnsw"
    g = store.manifest["generation"]
    vectors, ids = np.load(tmp_path / "idx" / f"vectors-{g}.npy"), np.load(tmp_path / "idx" / f"ids-{g}.npy")
    for row in range(0, len(ids), 7):
        assert store.search(vectors[row], 1)[0]["id"] == ids[row]


def test_reindexing_encodes_only_changed_files_and_drops_deleted_ones(tree, tiny_model_dir, tmp_path):
    out = tmp_path / "idx"
    first = build([tree], tiny_model_dir, out)
    g1 = json.loads((out / "manifest.json").read_text())["generation"]
    old_ids = set(np.load(out / f"ids-{g1}.npy").tolist())
    (tree / "goproj" / "stack.go").unlink()
    memory = tree / "pyproj" / "pkg" / "memory.py"
    memory.write_text(memory.read_text() + "\n\ndef brand_new_helper(x):\n    return x * 2\n")
    second = build([tree], tiny_model_dir, out)
    assert second["files_encoded"] == 1 and second["files_deleted"] == 1
    store = index_mod.IndexStore(out)
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
    assert index_mod.IndexStore(out).stats()["functions"] == before["functions"]


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
    flags = {"index": str(tmp_path / "idx"), "text": "parse a memory string", "threads": "1"}
    plain = index_mod.query_main(load_config(index_mod.QueryConfig, None, {**flags, "k": "8"}))["results"]
    reranked = index_mod.query_main(load_config(index_mod.QueryConfig, None, {
        **flags, "k": "3", "rerank": str(cross_encoder_dir), "rerank_k": "8"}))["results"]
    assert len(reranked) == 3
    assert {h["id"] for h in reranked} <= {h["id"] for h in plain}  # re-ordered from the vector top 8
    assert all(h["tokens"] for h in reranked)  # the code tokens the cross-encoder reads
    scores = [h["score"] for h in reranked]
    assert scores == sorted(scores, reverse=True)
    by_id = {h["id"]: h["score"] for h in plain}
    assert all(h["vector_score"] == pytest.approx(by_id[h["id"]]) for h in reranked)
    # The cross-encoder's own scores, recomputed pair by pair, give the same top 3.
    reranker = index_mod.Reranker(str(cross_encoder_dir))
    again = reranker.rerank("parse a memory string", [dict(h) for h in plain])
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
    hits = index_mod.query_main(load_config(index_mod.QueryConfig, None, {
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
