"""Code search: the paper's MRR protocol exactly, balanced pairs, both models, baselines, the table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from codebert.backbone import load_tokenizer
from codebert.cli import main as cli_main
from codebert.inputs import Layout
from codebert.config import load_config, read_preset
from codebert.errors import UserError
from codebert.search import baselines, bm25, evaluate, finetune, models, scorers
from codebert.search import lexical as lexical_search
from codebert.search.data import balanced_pairs, evaluation_groups, format_code_token, load_examples, short_queries
from codebert.search.metrics import gold_ranks, mean_reciprocal_rank, random_ranker_mrr
from conftest import CORPUS


# ---------------------------------------------------------------------------------- the metric
def test_rank_counts_every_candidate_scoring_at_least_the_gold():
    scores = np.array([
        [0.9, 0.1, 0.2, 0.3],  # gold 0 strictly best -> rank 1
        [0.5, 0.5, 0.1, 0.0],  # gold 1 tied with one other -> rank 2 (ties count against the model)
        [0.7, 0.7, 0.7, 0.7],  # all equal -> rank 4, never 1
        [0.2, 0.9, 0.8, 0.1],  # gold 3 is the worst -> rank 4
    ])
    ranks = gold_ranks(scores, np.arange(4))
    assert ranks.tolist() == [1, 2, 4, 4]
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 4) / 4)


def test_mrr_of_a_constant_scorer_is_one_over_the_group_size():
    ranks = gold_ranks(np.zeros((1000, 1000)), np.arange(1000))
    assert mean_reciprocal_rank(ranks) == pytest.approx(1 / 1000)


# -------------------------------------------------------------------------------------- groups
def test_random_ranker_mrr_is_the_mean_reciprocal_rank_over_every_gold_position():
    assert random_ranker_mrr(1) == 1.0
    assert random_ranker_mrr(2) == pytest.approx(0.75)
    assert random_ranker_mrr(1000) == pytest.approx(mean_reciprocal_rank(np.arange(1, 1001)))
    assert round(random_ranker_mrr(1000), 4) == 0.0075


def test_groups_are_the_reference_shuffle_cut_into_full_groups():
    groups = evaluation_groups(2500, 1000)
    assert [len(g) for g in groups] == [1000, 1000]  # the last 500 are dropped, as process_data.py does
    np.random.seed(0)  # the reference script's exact sequence of calls
    idxs = np.arange(2500)
    np.random.shuffle(idxs)
    assert np.array_equal(np.concatenate(groups), idxs[:2000])
    assert len(set(np.concatenate(groups).tolist())) == 2000
    assert evaluation_groups(999, 1000) == []


def test_code_tokens_lose_their_line_breaks_as_in_the_reference():
    assert format_code_token('"""a\r\nb\nc\rd"""') == '"""a b c d"""'
    examples = load_examples(CORPUS, "test")
    assert len(examples) == 60 and all("\n" not in c for c in examples.codes)


# ---------------------------------------------------------------------------- balanced pairs
def test_balanced_pairs_have_one_negative_per_positive_half_each_way():
    n = 101
    pairs = balanced_pairs(n, seed=3)
    assert len(pairs) == 2 * n and pairs.label.sum() == n
    pos, neg = pairs.label == 1, pairs.label == 0
    assert np.array_equal(pairs.query[pos], np.arange(n)) and np.array_equal(pairs.code[pos], np.arange(n))
    replaced_query = pairs.query[neg] != np.arange(n)
    replaced_code = pairs.code[neg] != np.arange(n)
    assert np.all(replaced_query ^ replaced_code)  # exactly one side of each negative is someone else's
    assert replaced_query.sum() == n // 2
    assert not np.array_equal(balanced_pairs(n, seed=4).code, pairs.code)  # the seed matters


# ------------------------------------------------------------------------------------- models
def search_config(model, out, **flags):
    flags = {"model": str(model), "data": str(CORPUS), "out": str(out), "progress": "false", "threads": "1", **flags}
    return load_config(finetune.SearchFinetuneConfig, read_preset("tiny", "search"), flags)


@pytest.fixture(scope="module")
def bi_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("bi") / "run"
    figures = finetune.main(search_config(tiny_model_dir, out, mode="bi", epochs="8"))
    return out, figures


def test_bi_encoder_learns_to_retrieve(bi_run, tiny_model_dir, tmp_path):
    out, figures = bi_run
    chance = sum(1 / r for r in range(1, 61)) / 60  # a random ranking of 60 valid candidates
    assert figures["best_valid_mrr"] > 2 * chance
    assert {"config.json", "model.safetensors", "search_model.json", "modules.json", "tokenizer.json"} <= {p.name for p in (out / "best").iterdir()}
    result = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(out / "best"), "data": str(CORPUS), "group_size": "20", "full": "true", "progress": "false",
        "out": str(tmp_path / "bi.json")}))
    assert result["python_queries"] == 60  # 3 groups of 20
    assert result["python"] > 2 * sum(1 / r for r in range(1, 21)) / 20
    assert 0 < result["python_full_mrr"] <= 1
    assert json.loads((tmp_path / "bi.json").read_text())["macro_mrr"] == result["macro_mrr"]


def test_the_bi_encoder_carries_a_model_card_that_gains_each_measured_figure(bi_run, tmp_path, tiny_model_dir):
    import yaml

    out, figures = bi_run
    model = tmp_path / "model"
    shutil.copytree(out / "best", model)
    card = (model / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == str(tiny_model_dir) and meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity"
    [valid] = [r for r in meta["model-index"][0]["results"] if r["dataset"]["split"] == "valid"]
    assert valid["metrics"][0]["value"] == pytest.approx(figures["best_valid_mrr"], abs=1e-4)
    result = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(model), "data": str(CORPUS), "group_size": "20", "progress": "false"}))
    meta = yaml.safe_load((model / "README.md").read_text().split("---")[1])
    test = [r for r in meta["model-index"][0]["results"] if r["dataset"]["split"] == "test"]
    assert len(test) == 1 and test[0]["metrics"][0]["value"] == pytest.approx(result["macro_mrr"], abs=1e-4)
    evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(model), "data": str(CORPUS), "group_size": "20", "progress": "false"}))
    assert (model / "README.md").read_text().count("| test |") == 1  # the same measurement again replaces its row


def test_averaged_checkpoints_are_the_mean_of_their_weights_and_search_as_a_model(tmp_path, tiny_model_dir, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    finetune.main(search_config(tiny_model_dir, out, mode="bi", max_steps="4", save_every="2", keep_checkpoints="2"))
    steps = sorted(out.glob("step-*"))
    assert len(steps) == 2
    code = cli_main(["average", *map(str, steps), "--out", str(tmp_path / "mean")])
    assert code == 0
    mean = load_file(str(tmp_path / "mean" / "model.safetensors"))
    first, last = (load_file(str(s / "model.safetensors")) for s in steps)
    name = next(k for k in mean if mean[k].is_floating_point() and not torch.equal(first[k], last[k]))
    assert torch.allclose(mean[name], (first[name] + last[name]) / 2, atol=1e-6)
    assert not (tmp_path / "mean" / "training_state.pt").exists() and (tmp_path / "mean" / "search_model.json").is_file()
    result = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(tmp_path / "mean"), "data": str(CORPUS), "group_size": "20", "progress": "false"}))
    assert 0 < result["python"] <= 1
    code = cli_main(["average", str(tiny_model_dir), str(steps[-1]), "--out", str(tmp_path / "mixed")])
    assert code == 2 and "not one run's checkpoints" in capsys.readouterr().err and not (tmp_path / "mixed").exists()


def test_the_bi_encoder_folder_opens_in_plain_transformers(bi_run):
    from transformers import AutoModel, AutoTokenizer

    out, _ = bi_run
    model = models.load_bi_encoder(out / "best")
    tokenizer = AutoTokenizer.from_pretrained(out / "best")
    plain = AutoModel.from_pretrained(out / "best")
    batch = tokenizer(["parse a memory string"], return_tensors="pt")
    hidden = plain(**batch).last_hidden_state.mean(1)
    ours = model(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(torch.nn.functional.normalize(hidden, dim=-1), ours, atol=1e-5)


def test_cross_encoder_fits_its_training_pairs_and_is_evaluated_by_the_protocol(tmp_path, tiny_model_dir):
    out = tmp_path / "cross"
    figures = finetune.main(search_config(tiny_model_dir, out, mode="cross", max_records="24", max_steps="150",
                                          batch_size="8", learning_rate="0.002", log_every="50"))
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "acc" in line and "valid_acc" not in line][-1]
    assert last["acc"] > 0.75  # 48 balanced pairs, memorised
    assert (out / "best" / "search_model.json").is_file() and "best_valid_acc" in figures
    result = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(out / "best"), "data": str(CORPUS), "group_size": "20", "max_groups": "2",
        "queries_per_group": "5", "progress": "false"}))
    assert result["python_queries"] == 10 and 0 < result["python"] <= 1
    assert result["python_pairs_per_s"] > 0


def test_cross_scorer_batches_by_length_but_returns_every_pair_in_place(tiny_model_dir):
    model = models.load_cross_encoder(tiny_model_dir).eval()
    from codebert.backbone import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    examples = load_examples(CORPUS, "test")
    spec = models.SearchSpec(mode="cross", max_length=64, pair_layout="codebert", nl_length=50)
    scorer = scorers.CrossScorer(model, tokenizer, examples, spec, batch_size=7, device=torch.device("cpu"))
    queries, codes = np.array([3, 1, 4]), np.array([5, 9, 2, 6, 0])
    batched = scorer.score(queries, codes)
    for a, q in enumerate(queries):
        for b, c in enumerate(codes):
            pair = models.cross_inputs([(scorer.queries[q], scorer.codes[c])], spec)
            with torch.no_grad():
                single = float(model(**pair.to("cpu")).logits[0, 1])
            assert batched[a, b] == pytest.approx(single, abs=1e-4)


def test_no_pretraining_starts_from_random_weights_of_the_same_shape(tiny_model_dir):
    pretrained = models.load_cross_encoder(tiny_model_dir)
    scratch = models.load_cross_encoder(tiny_model_dir, from_scratch=True)
    a, b = pretrained.roberta.embeddings.word_embeddings.weight, scratch.roberta.embeddings.word_embeddings.weight
    assert a.shape == b.shape and not torch.allclose(a, b)


# ----------------------------------------------------------------------------------- baselines
def test_bm25_tokens_split_identifiers():
    assert bm25.bm25_tokens("parseHTTPHeader_v2(x)") == ["parse", "http", "header", "parsehttpheader", "v", "2", "v2", "x"]


def test_bm25_baseline_beats_chance_by_far(tmp_path):
    figures = baselines.main(load_config(baselines.SearchBaselineConfig, None, {
        "kind": "bm25", "data": str(CORPUS), "out": str(tmp_path), "group_size": "20"}))
    assert figures["python"] > 0.5  # stdlib docs share words with their code; chance is 0.18
    assert json.loads((tmp_path / "results.json").read_text())["python"] == figures["python"]


def test_bm25_gives_a_query_without_words_the_worst_rank():
    from codebert.search.data import SearchExamples

    examples = SearchExamples(["+ - *", "sum of values"], ["def add ( a ) : pass", "def sum_values ( v ) : pass"], ["", ""], ["python"] * 2)
    scores = bm25.BM25Scorer(examples).score(np.array([0, 1]), np.array([0, 1]))
    assert gold_ranks(scores, np.array([0, 1])).tolist() == [2, 1]


@pytest.mark.parametrize("kind", ["nbow", "cnn", "birnn", "selfatt"])
def test_each_neural_baseline_trains_and_ranks(tmp_path, tokenizer_dir, kind):
    figures = baselines.main(load_config(baselines.SearchBaselineConfig, read_preset("tiny", "baseline"), {
        "kind": kind, "data": str(CORPUS), "out": str(tmp_path), "tokenizer": str(tokenizer_dir),
        "group_size": "20", "max_epochs": "2", "progress": "false", "threads": "1"}))
    assert figures["python_epochs"] == 2 and 0 < figures["python"] <= 1
    assert (tmp_path / "python.model.pt").is_file()


def test_weighted_mean_pool_ignores_padding():
    pool = baselines.WeightedMeanPool(4)
    hidden = torch.randn(1, 3, 4)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    changed = hidden.clone()
    changed[0, 2] = 100.0
    assert torch.allclose(pool(hidden, mask), pool(changed, mask))


# ------------------------------------------------------------------------------- table and CLI
def test_table_puts_rows_and_macro_average_between_markers(tmp_path):
    rows = []
    for name, values in (("BM25", {"ruby": 0.5, "go": 0.7}), ("mlm+rtd", {"ruby": 0.6, "go": 0.8})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"label": name, "languages": list(values), "macro_mrr": float(np.mean(list(values.values()))), **values}))
        rows.append(str(path))
    md = tmp_path / "results.md"
    md.write_text("# Results\n\n<!-- table2:start -->\nold\n<!-- table2:end -->\n\nafter\n")
    assert cli_main(["search", "table", *rows, "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "old" not in text and text.endswith("after\n")
    assert "| model | ruby | go | macro-avg |" in text  # the paper's column order
    assert "| mlm+rtd | 0.6000 | 0.8000 | 0.7000 |" in text


def test_evaluating_a_model_that_is_not_fine_tuned_is_a_one_line_error(tiny_model_dir, capsys):
    assert cli_main(["search", "evaluate", "--model", str(tiny_model_dir), "--data", str(CORPUS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codebert: error:") and "search_model.json" in err and "\n" not in err


def test_too_few_test_examples_for_a_group_is_a_clear_error(bi_run, capsys):
    out, _ = bi_run
    assert cli_main(["search", "evaluate", "--model", str(out / "best"), "--data", str(CORPUS), "--no-progress"]) == 2
    assert "fewer than one group of 1000" in capsys.readouterr().err


def test_hard_negatives_are_the_best_bm25_match_of_the_querys_language_that_is_not_the_pair_itself():
    from codebert.bm25 import bm25_index, bm25_tokens

    examples = load_examples(CORPUS, "train")
    examples.languages = ["python" if i % 3 else "go" for i in range(len(examples))]  # two languages (the fixture has one)
    hard = finetune.bm25_hard_negatives(examples)
    assert len(hard) == len(examples)
    assert all(h != i and examples.codes[h] != examples.codes[i] for i, h in enumerate(hard))
    assert all(examples.languages[h] == examples.languages[i] for i, h in enumerate(hard))
    # the best of its language: for a python query, the top of an index of the python codes alone
    python = [i for i, lang in enumerate(examples.languages) if lang == "python"]
    scores = bm25_index([examples.codes[i] for i in python]).get_scores(bm25_tokens(examples.queries[python[0]]))
    order = [python[j] for j in np.argsort(-scores, kind="stable") if python[j] != python[0]]
    assert hard[python[0]] == order[0]


def test_bad_fine_tuning_options_are_reported_together(capsys, tmp_path):
    code = cli_main(["search", "finetune", "--model", "x", "--data", str(tmp_path / "missing"), "--out", str(tmp_path),
                     "--mode", "cross", "--hard-negatives", "--batch-size", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--hard-negatives: only for --mode bi" in err and "--batch-size" in err and "no such folder" in err


# ------------------------------------------------------------------------------------- hybrid
def test_competition_ranks_share_the_best_rank_on_ties():
    from codebert.search.fusion import competition_ranks

    assert competition_ranks(np.array([[0.5, 0.9, 0.5, 0.1]])).tolist() == [[2, 1, 2, 4]]
    assert competition_ranks(np.zeros((1, 3))).tolist() == [[1, 1, 1]]


def test_fusions_against_hand_computed_scores():
    from codebert.search.fusion import fuse

    dense = np.array([[0.9, 0.2, 0.5]])
    lexical = np.array([[0.0, 6.0, 3.0]])
    # rrf: ranks dense (1, 3, 2), lexical (3, 1, 2)
    expected = [1 / 61 + 1 / 63, 1 / 63 + 1 / 61, 1 / 62 + 1 / 62]
    assert fuse(dense, lexical, "rrf") == pytest.approx(np.array([expected]))
    # sum: min-max per query: dense (1, 0, 3/7), lexical (0, 1, 0.5)
    assert fuse(dense, lexical, "sum", weight=0.25) == pytest.approx(np.array([[0.75, 0.25, 0.25 * 0.5 + 0.75 * 3 / 7]]))
    assert fuse(dense, lexical, "sum", weight=0.0).argmax() == 0 and fuse(dense, lexical, "sum", weight=1.0).argmax() == 1
    # a query with no word: BM25 scores all 0, the fused ranking is the dense one
    assert fuse(dense, np.zeros((1, 3)), "sum", weight=0.5).argsort().tolist() == dense.argsort().tolist()


def test_hybrid_and_lexical_ranking_in_evaluate(bi_run, capsys):
    out, _ = bi_run
    results = {}
    for ranking, extra in (("dense", {}), ("lexical", {}), ("hybrid", {"fusion": "rrf"}), ("hybrid", {"fusion": "sum", "lexical_weight": "0"})):
        flags = {"model": str(out / "best"), "data": str(CORPUS), "group_size": "20", "progress": "false", "ranking": ranking, **extra}
        results[(ranking, extra.get("fusion"), extra.get("lexical_weight"))] = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, flags))
    dense, lexical = results[("dense", None, None)], results[("lexical", None, None)]
    assert results[("hybrid", "sum", "0")]["python"] == pytest.approx(dense["python"])  # weight 0: the dense ranking
    examples = load_examples(CORPUS, "test", ["python"])
    bm25_row, _ = scorers.group_mrr(lexical_search.FtsScorer(examples), evaluation_groups(len(examples), 20))
    assert lexical["python"] == pytest.approx(bm25_row) and lexical["python"] != dense["python"]  # the tool's BM25 on the same groups
    flags = {"model": str(out / "best"), "data": str(CORPUS), "group_size": "20", "progress": "false", "ranking": "lexical", "lexical_form": "words"}
    words = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, flags))  # the rows from before the stems, again
    words_row, _ = scorers.group_mrr(lexical_search.FtsScorer(examples, "words"), evaluation_groups(len(examples), 20))
    assert words["python"] == pytest.approx(words_row) and words["lexical_form"] == "words" and lexical["lexical_form"] == "stems"
    assert 0 < results[("hybrid", "rrf", None)]["python"] <= 1 and results[("hybrid", "rrf", None)]["fusion"] == "rrf"
    code = cli_main(["search", "evaluate", "--model", str(out / "best"), "--data", str(CORPUS), "--ranking", "hybrid", "--full"])
    assert code == 2 and "--ranking hybrid" in capsys.readouterr().err


def test_short_queries_keep_content_words_in_order_the_same_every_run():
    queries = ["Returns the number of bytes in the given buffer .", "Parse an HTTP header line into a dict", "the of", "Sort"]
    short = short_queries(queries, 3)
    assert short == short_queries(queries, 3)  # seeded
    assert short[0] == "number bytes buffer"  # exactly its three content words, in order
    words = short[1].split()
    assert len(words) == 3 and set(words) <= {"Parse", "HTTP", "header", "line", "dict"}
    assert words == sorted(words, key=queries[1].split().index)
    assert short[2:] == ["the of", "Sort"]  # no content word: the first words; fewer than 3: all
    assert short_queries(queries, 0) == queries


def test_hybrid_chooses_on_valid_among_rankings_that_never_lose_to_dense(bi_run, tmp_path, capsys):
    out, _ = bi_run
    model = tmp_path / "model"
    shutil.copytree(out / "best", model)
    code = cli_main(["search", "hybrid", "--model", str(model), "--data", str(CORPUS), "--group-size", "20", "--no-progress",
                     "--query-words", "0", "3", "--weights", "0.2", "0.5", "--save", "--out", str(tmp_path / "h.json")])
    assert code == 0 and "chosen:" in capsys.readouterr().out
    figures = json.loads((tmp_path / "h.json").read_text())
    rows = {r["name"]: r for r in figures["rows"]}
    assert set(rows) == {"dense", "lexical (BM25)", "rrf", "sum 0.2", "sum 0.5"}
    # the dense row is evaluate's dense ranking of the same split and groups
    dense = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(model), "data": str(CORPUS), "split": "valid", "group_size": "20", "progress": "false"}))
    assert rows["dense"]["macro"]["0"] == pytest.approx(dense["macro_mrr"])
    short = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(model), "data": str(CORPUS), "split": "valid", "group_size": "20", "progress": "false", "query_words": "3",
        "ranking": "hybrid", "lexical_weight": "0.5"}))
    assert rows["sum 0.5"]["macro"]["3"] == pytest.approx(short["macro_mrr"])
    chosen = rows[figures["chosen"]["name"]]
    assert all(chosen["macro"][k] >= rows["dense"]["macro"][k] for k in ("0", "3"))
    best = max((r for r in rows.values() if all(r["macro"][k] >= rows["dense"]["macro"][k] for k in ("0", "3"))),
               key=lambda r: r["macro"]["0"] + r["macro"]["3"])
    assert chosen["macro"] == best["macro"]
    spec = models.SearchSpec.read(model)
    assert (spec.ranking, spec.fusion, spec.lexical_weight) == (chosen["ranking"], chosen["fusion"], chosen["lexical_weight"])


def test_hybrid_save_needs_a_fine_tuned_folder(tiny_model_dir, capsys):
    code = cli_main(["search", "hybrid", "--model", str(tiny_model_dir), "--data", str(CORPUS), "--save"])
    assert code == 2 and "not a bi-encoder" in capsys.readouterr().err


# ------------------------------------------------------------------------------ recipe options
def test_language_batches_draw_each_batch_from_one_group_in_proportion():
    from codebert.training.batches import BucketedBatches

    class Corpus:
        def __len__(self):
            return 300

        def lengths(self, max_length):
            return np.arange(300) % 17

    groups = np.array([0] * 200 + [1] * 60 + [2] * 40)
    batches = BucketedBatches(Corpus(), 10, 64, seed=1, collate_fn=lambda c, idx, m: idx, groups=groups)
    drawn = [next(batches) for _ in range(batches.batches_per_epoch())]
    assert all(len(set(groups[b])) == 1 for b in drawn)  # one language per batch
    assert sorted(np.bincount([groups[b[0]] for b in drawn]).tolist()) == [4, 6, 20]  # in proportion to size
    assert len({i for b in drawn for i in b}) == 300  # every example once per epoch
    mixed = BucketedBatches(Corpus(), 10, 64, seed=1, collate_fn=lambda c, idx, m: idx)
    assert any(len(set(groups[next(mixed)])) > 1 for _ in range(30))  # without groups: mixed


def test_the_symmetric_loss_adds_the_code_to_query_direction():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    c = torch.nn.functional.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 1.0]]), dim=-1)  # the last: a hard negative
    t = 0.5
    forward = torch.nn.functional.cross_entropy(q @ c.T / t, torch.arange(2))
    backward = torch.nn.functional.cross_entropy(c[:2] @ q.T / t, torch.arange(2))
    assert float(models.info_nce(q, c, t)) == pytest.approx(float(forward))
    assert float(models.info_nce(q, c, t, symmetric=True)) == pytest.approx(float((forward + backward) / 2))
    assert float(backward) != pytest.approx(float(forward))


def test_recipe_options_train_a_bi_encoder(tmp_path, tiny_model_dir):
    figures = finetune.main(search_config(tiny_model_dir, tmp_path / "run", mode="bi", max_steps="4",
                                          symmetric_loss="true", language_batches="true", choose_ranking="true"))
    assert figures["step"] == 4
    # the fusion with BM25 chosen on valid travels with the model: `codebert index` ranks that way
    spec = models.SearchSpec.read(tmp_path / "run" / "best")
    assert figures["ranking"] and spec.ranking in ("dense", "lexical", "hybrid")
    assert (spec.ranking == "dense") == (figures["ranking"] == "dense")
    record = json.loads((tmp_path / "run" / finetune.RANKING_FILE).read_text())  # the figures the choice was made on
    assert record["chosen"]["name"] == figures["ranking"]
    with pytest.raises(UserError, match="--symmetric-loss: only for --mode bi"):
        search_config(tiny_model_dir, tmp_path / "x", mode="cross", symmetric_loss="true")


def test_model_mined_negatives_are_near_but_not_too_near_and_of_the_querys_language(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    figures = finetune.main(search_config(tiny_model_dir, out, mode="bi", max_steps="2", hard_negatives="true",
                                          hard_negatives_from="model", negative_margin="0.02"))
    assert figures["step"] == 2
    hard = np.load(out / "hard_negatives.npy")
    examples = load_examples(CORPUS, "train")
    tokenizer = load_tokenizer(tiny_model_dir)
    tokens = finetune.TokenisedExamples.of(examples, tokenizer)
    spec = models.SearchSpec(mode="bi", max_length=search_config(tiny_model_dir, out, mode="bi").max_length,
                             query_length=search_config(tiny_model_dir, out, mode="bi").query_length)
    model = models.load_bi_encoder(str(tiny_model_dir), "mean").eval()
    layout = Layout.of(tokenizer)
    q = scorers.encode_all(model, tokens.queries, spec.query_length, 64, "cpu", layout).numpy()
    c = scorers.encode_all(model, tokens.codes, spec.max_length, 64, "cpu", layout).numpy()
    own = (q * c).sum(1)
    picked = (q * c[hard]).sum(1)
    assert len(hard) == len(examples) and (hard != np.arange(len(hard))).all()
    allowed = q @ c.T
    allowed[allowed > (own - 0.02 + 1e-4)[:, None]] = -np.inf  # the query's own code, and anything as close
    has_one = np.isfinite(allowed).any(1)
    assert has_one.mean() > 0.5  # the check below is about something
    # the nearest allowed code, never one within the margin (the tiny model's vectors are bunched:
    # a query with no code far enough below its own gets the next example)
    assert (picked[has_one] <= own[has_one] - 0.02 + 1e-4).all()
    # (a few differ: the nearest is a copy of the query's own code, or within float noise of the margin)
    assert np.isclose(picked[has_one], allowed.max(1)[has_one], atol=2e-4).mean() > 0.9
    assert (hard[~has_one] == (np.arange(len(hard))[~has_one] + 1) % len(hard)).all()
    again = finetune.main(search_config(tiny_model_dir, out, mode="bi", max_steps="3", hard_negatives="true",
                                        hard_negatives_from="model", resume="auto"))
    assert again["step"] == 3 and (np.load(out / "hard_negatives.npy") == hard).all()  # mined once per run


def test_lexical_stems_meet_across_inflections_and_a_querys_stop_words_score_nothing():
    """The tool's lexical words are stems, and a query's stop words are dropped: "Returns the parsed
    values" finds `parse_value` (which the sub-words as they are miss), and no function gains from
    sharing "the" or "of" with the query."""
    from codebert.search.data import SearchExamples

    assert lexical_search.query_words("Returns the parsed values of this") == ["return", "pars", "valu"]
    assert lexical_search.indexed_words("def parse_value(values): return the") == ["def", "pars", "valu", "valu", "return", "the"]
    codes = ["def parse_value(text):\n    return int(text)",
             "def the_of_the(x):\n    # the of the of the\n    return x",
             "def load(path):\n    return open(path).read()"]
    query = "Returns the parsed values of the text"
    examples = SearchExamples([query] * 3, codes, [""] * 3, ["python"] * 3)
    stems = lexical_search.FtsScorer(examples).score(np.array([0]), np.arange(3))[0]
    words = lexical_search.FtsScorer(examples, form="words").score(np.array([0]), np.arange(3))[0]
    assert stems.argmax() == 0 and stems[1] <= stems[2]  # "the", "of": no help to the_of_the
    assert words.argmax() == 1  # the sub-words as they are: "the" and "of" outscore everything else


def test_the_servers_bm25_postings_answer_as_fts5_does():
    """`Bm25Matrix` (the server's lexical ranker) returns FTS5's rows and scores, whether or not the
    query has words in half the rows or more (FTS5's floor IDF, which the postings skip at first),
    at every limit, with rows narrowed by a mask as FTS5 narrows them with a WHERE clause."""
    import sqlite3

    examples = load_examples(CORPUS, "train")
    db = sqlite3.connect(":memory:")
    db.execute(lexical_search.SCHEMA)
    db.execute("CREATE TABLE kinds(id INTEGER PRIMARY KEY, odd INTEGER)")
    lexical_search.add(db, [(i + 1, code) for i, code in enumerate(examples.codes)])
    db.executemany("INSERT INTO kinds VALUES (?, ?)", [(i + 1, (i + 1) % 2) for i in range(len(examples))])
    matrix = lexical_search.Bm25Matrix(db)
    assert len(matrix) == len(examples)
    common = [w for w, t in matrix.vocabulary.items() if matrix.idf[t] == lexical_search.IDF_FLOOR]
    assert "self" in common and "return" in common  # words in half the Python functions or more
    queries = examples.queries[:20] + ["return self", "return the value of self", "zzz unknown words", "", "parse self"]
    odd = np.array([rowid % 2 == 1 for rowid in matrix.rowids])
    for query in queries:
        for limit in (1, 5, 100, 10_000):
            expected = lexical_search.search(db, query, limit)
            got = matrix.search(query, limit)
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-12), (query, limit)
            assert {i for i, _ in got} == {i for i, _ in expected} or _ties_only(got, expected), (query, limit)
            narrowed = lexical_search.search(db, query, limit, "JOIN kinds k ON k.id = lexical.rowid", "AND k.odd = 1")
            got = matrix.search(query, limit, odd)
            assert [s for _, s in got] == pytest.approx([s for _, s in narrowed], rel=1e-12), (query, limit)
            assert all(i % 2 == 1 for i, _ in got) and ({i for i, _ in got} == {i for i, _ in narrowed} or _ties_only(got, narrowed))
    assert matrix.search("return self", 0) == [] and matrix.search("", 5) == []


def _ties_only(got, expected) -> bool:
    """The two answers differ only among rows tied at the cut (FTS5 leaves their order open)."""
    cut = expected[-1][1]
    return {i for i, s in got if s != cut} == {i for i, s in expected if s != cut}
