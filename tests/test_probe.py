"""NL-PL probing: item construction per setting, the candidate scoring rule, CodeXGLUE's format."""

from __future__ import annotations

import json

import torch

from codebert.cli import main as cli_main
from codebert.config import load_config
from codebert.corpus.jsonl import write_jsonl
from codebert.probe import MASK, MaskScorer, ProbeBuildConfig, ProbeRunConfig, build_main, choose, load_items, nl_item, pl_items, run_main
from codebert.backbone import load_tokenizer


def record(doc, code, url="u"):
    return {"repo": "r", "path": "p.py", "func_name": "f", "original_string": "", "language": "python", "code": "",
            "code_tokens": code, "docstring": "", "docstring_tokens": doc, "sha": "", "url": url, "partition": "test"}


def test_nl_items_need_exactly_one_keyword_of_one_class():
    item = nl_item(record(["Return", "the", "Maximum", "value"], ["def", "f"]))
    assert item is None  # "maximum" is not one of the six keywords
    item = nl_item(record(["Maximize", "the", "gain"], ["def", "f"]))
    assert item["nl_tokens"] == [MASK, "the", "gain"] and item["word"] == "maximize" and item["answer_class"] == "max"
    assert set(item["candidates"]) == {"max", "min", "less", "greater"}
    assert nl_item(record(["max", "or", "min"], ["x"])) is None  # two classes: ambiguous
    assert nl_item(record(["less", "is", "less"], ["x"])) is None  # a second occurrence gives it away


def test_pl_items_mask_the_first_max_or_min_and_the_preceding_variant_stops_there():
    full, preceding = pl_items(record(["Clamp", "x"], ["return", "min", "(", "max", "(", "x", ",", "lo", ")", ",", "hi", ")"]))
    assert full["pl_tokens"][:3] == ["return", MASK, "("] and full["word"] == "min" and "max" in full["pl_tokens"]
    assert preceding["pl_tokens"] == ["return", MASK] and preceding["setting"] == "pl_preceding"
    assert pl_items(record(["x"], ["return", "maximum"])) == []


def test_build_writes_every_setting_with_counts(tmp_path):
    data = tmp_path / "corpus" / "python"
    data.mkdir(parents=True)
    write_jsonl(data / "valid.jsonl", [record(["Greater", "of", "two"], ["return", "max", "(", "a", ",", "b", ")"])])
    write_jsonl(data / "test.jsonl", [record(["Minimize", "cost"], ["return", "min", "(", "c", ")"], url="v")])
    figures = build_main(ProbeBuildConfig(data=tmp_path / "corpus", out=tmp_path / "probe.json"))
    assert figures["counts"] == {"nl": {"python": 2}, "pl": {"python": 2}, "pl_preceding": {"python": 2}}
    items = json.loads((tmp_path / "probe.json").read_text())
    assert {i["idx"] for i in items} >= {"python-nl-0", "python-pl-1"}


class StubScorer:
    """Log-probabilities chosen by hand: ' max' is one piece, ' minimize' two pieces."""

    pieces_of = {"max": [10], "maximize": [11, 12], "min": [20], "minimize": [21, 22], "less": [30], "greater": [40]}

    def __init__(self, table):
        self.table = table  # span -> (items, span, vocab) tensor

    def pieces(self, word):
        return self.pieces_of[word]

    def log_probs(self, items, span):
        return self.table[span]


def test_a_class_scores_its_best_form_and_multi_piece_forms_average_their_pieces():
    from codebert.probe import NL_CLASSES

    items = [{"candidates": NL_CLASSES}]
    one = torch.full((1, 1, 50), -10.0)
    one[0, 0, 10] = -3.0  # max
    one[0, 0, 20] = -4.0  # min
    two = torch.full((1, 2, 50), -10.0)
    two[0, 0, 21], two[0, 1, 22] = -1.0, -3.0  # minimize: mean -2.0 beats max's -3.0
    assert choose(StubScorer({1: one, 2: two}), items) == ["min"]
    two[0, 1, 22] = -6.0  # minimize: mean -3.5; max now wins
    assert choose(StubScorer({1: one, 2: two}), items) == ["max"]


def test_the_mask_survives_truncation_of_a_long_code(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    scorer = MaskScorer(None, tokenizer, "pair", 64, torch.device("cpu"))
    item = {"nl_tokens": ["Largest", "item"], "pl_tokens": ["x"] * 200 + [MASK, "(", "items", ")"]}
    for span in (1, 3):
        ids, first, types = scorer.encode(item, span)
        assert len(ids) <= 64 and ids[first : first + span] == [tokenizer.mask_token_id] * span
        assert ids[:1] == [tokenizer.cls_token_id] and ids.count(tokenizer.sep_token_id) == 2  # <s> NL </s> CODE </s>
        assert types == [0] * len(ids)  # RoBERTa: one segment type


def test_codexglue_files_with_a_separate_answers_file(tmp_path, tiny_bert_dir):
    folder = tmp_path / "go"
    folder.mkdir()
    items = [{"idx": "maxmin-1", "nl_tokens": ["Largest", "of", "a", "and", "b"], "pl_tokens": ["return", MASK, "(", "a", ",", "b", ")"]},
             {"idx": "maxmin-2", "nl_tokens": ["Smallest"], "pl_tokens": ["x", ":=", MASK, "(", "a", ",", "b", ")"]}]
    (folder / "clozeTest.json").write_text(json.dumps(items))
    (tmp_path / "answers.txt").write_text("maxmin-1<CODESPLIT>max\nmaxmin-2<CODESPLIT>min\n")
    cfg = load_config(ProbeRunConfig, None, {"model": str(tiny_bert_dir), "data": str(folder / "clozeTest.json"),
                                             "answers": str(tmp_path / "answers.txt"), "progress": "false"})
    loaded = load_items(cfg)
    assert [i["answer_class"] for i in loaded] == ["max", "min"] and {i["language"] for i in loaded} == {"go"}
    cfg.predictions = tmp_path / "out" / "predictions.txt"
    figures = run_main(cfg)
    assert (figures["layout"], figures["scoring"]) == ("joined", "codexglue")  # CodeXGLUE's protocol for its files
    assert figures["counts"]["pl"] == {"go": 2, "all": 2} and 0 <= figures["accuracy"]["pl"]["all"] <= 1
    # One line per item in the file's order, in the answers file's format; they give the accuracy.
    lines = cfg.predictions.read_text().splitlines()
    assert [line.split("<CODESPLIT>")[0] for line in lines] == ["maxmin-1", "maxmin-2"]
    picks = [line.split("<CODESPLIT>")[1] for line in lines]
    assert set(picks) <= {"max", "min"}
    assert sum(p == a for p, a in zip(picks, ["max", "min"])) / 2 == figures["accuracy"]["pl"]["all"]
    for scoring in ("spaced", "codexglue"):
        assert cli_main(["probe", "run", "--model", str(tiny_bert_dir), "--data", str(folder / "clozeTest.json"),
                         "--answers", str(tmp_path / "answers.txt"), "--layout", "pair", "--scoring", scoring, "--no-progress"]) == 0


def test_codexglue_scoring_is_run_cloze_on_the_same_model(tiny_bert_dir):
    # run_cloze.py, step by step: the text is nl_tokens + pl_tokens joined by spaces, tokenised, cut to
    # 510, wrapped by build_inputs_with_special_tokens; each word is its vocabulary entry as spelled
    # (`tokenizer.encoder[w]`); the pick is the word with the higher logit at the mask.
    from codebert.pretrain.model import load_model

    tokenizer, model = load_tokenizer(tiny_bert_dir), load_model(str(tiny_bert_dir)).eval()
    scorer = MaskScorer(model, tokenizer, "joined", 512, torch.device("cpu"), scoring="codexglue")
    word_ids = {w: tokenizer.get_vocab()[w] for w in ("max", "min")}
    assert [scorer.pieces(w) for w in word_ids] == [[i] for i in word_ids.values()]
    items = [{"nl_tokens": ["Largest", "of", "a", "and", "b"], "pl_tokens": ["return", MASK, "(", "a", ",", "b", ")"],
              "candidates": {"max": ("max",), "min": ("min",)}},
             {"nl_tokens": ["limits", "the", "value"], "pl_tokens": ["if", "x", ">", "self", ".", MASK, ":", "x", "=", "0"],
              "candidates": {"max": ("max",), "min": ("min",)}}]
    for item in items:
        text = " ".join(item["nl_tokens"] + item["pl_tokens"]).replace(MASK, tokenizer.mask_token)
        # build_inputs_with_special_tokens of one sequence (gone from transformers 5): [CLS] ids [SEP]
        ids_510 = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[:510]
        inputs = [tokenizer.cls_token_id, *ids_510, tokenizer.sep_token_id]
        index = inputs.index(tokenizer.mask_token_id)
        ids, first, _ = scorer.encode(item, 1)
        assert (ids, first) == (inputs, index)
        positions = torch.zeros(1, len(inputs), dtype=torch.bool)
        positions[0, index] = True
        with torch.no_grad():
            logits = model(torch.tensor([inputs]), torch.ones(1, len(inputs), dtype=torch.long), mlm_positions=positions).mlm_logits[0]
        expected = max(word_ids, key=lambda w: float(logits[word_ids[w]]))
        assert choose(scorer, [item]) == [expected]


def test_codexglue_scoring_needs_the_word_as_one_vocabulary_entry(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "cloze.json"  # our byte-level BPE of 1,000 tokens has ` max` pieces, no `max` entry
    path.write_text(json.dumps([{"idx": "a", "nl_tokens": ["x"], "pl_tokens": [MASK], "word": "max"}]))
    assert cli_main(["probe", "run", "--model", str(tiny_model_dir), "--data", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'max' is not one entry of the tokenizer's vocabulary (use --scoring spaced)" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["probe", "run", "--model", str(tiny_model_dir), "--data", str(path), "--no-progress", "--scoring", "spaced"]) == 0


def test_items_without_answers_are_a_clear_error(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "cloze.json"
    path.write_text(json.dumps([{"idx": "a", "nl_tokens": ["x"], "pl_tokens": [MASK]}]))
    assert cli_main(["probe", "run", "--model", str(tiny_model_dir), "--data", str(path)]) == 2
    assert "has no answer" in capsys.readouterr().err


def test_predictions_follow_the_file_order_across_settings(tmp_path, tiny_model_dir):
    from codebert.pretrain.model import load_model
    from codebert.probe import NL_CLASSES

    # Settings interleaved in the file: the run scores them grouped by setting, the file keeps the order.
    items = [{"idx": "a", "setting": "pl", "nl_tokens": ["Largest"], "pl_tokens": ["return", MASK, "(", "a", ")"], "word": "max"},
             {"idx": "b", "setting": "nl", "nl_tokens": [MASK, "the", "cost"], "pl_tokens": ["return", "x", "<", "y"],
              "word": "less", "candidates": NL_CLASSES},
             {"idx": "c", "setting": "pl", "nl_tokens": ["Smallest"], "pl_tokens": ["y", "=", MASK, "(", "b", ")"], "word": "min"}]
    (tmp_path / "items.json").write_text(json.dumps(items))
    out = tmp_path / "predictions.txt"
    assert cli_main(["probe", "run", "--model", str(tiny_model_dir), "--data", str(tmp_path / "items.json"),
                     "--predictions", str(out), "--no-progress", "--language", "go"]) == 0
    lines = [line.split("<CODESPLIT>") for line in out.read_text().splitlines()]
    assert [idx for idx, _ in lines] == ["a", "b", "c"]
    cfg = load_config(ProbeRunConfig, None, {"model": str(tiny_model_dir), "data": str(tmp_path / "items.json")})
    scorer = MaskScorer(load_model(str(tiny_model_dir)).eval(), load_tokenizer(tiny_model_dir), "pair", 512, torch.device("cpu"))
    assert [pick for _, pick in lines] == [choose(scorer, [item])[0] for item in load_items(cfg)]
    assert lines[1][1] in NL_CLASSES


def test_an_unwritable_predictions_path_is_a_one_line_error(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "cloze.json"
    path.write_text(json.dumps([{"idx": "a", "nl_tokens": ["x"], "pl_tokens": [MASK], "word": "max"}]))
    (tmp_path / "a-file").write_text("x")
    assert cli_main(["probe", "run", "--model", str(tiny_model_dir), "--data", str(path), "--no-progress", "--scoring", "spaced",
                     "--predictions", str(tmp_path / "a-file" / "predictions.txt")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
