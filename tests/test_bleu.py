"""Smoothed BLEU-4 as CodeNN's bleu.py / CodeXGLUE's evaluator computes it: hand-computed cases."""

from __future__ import annotations

import json
import math

import pytest

from codebert.bleu import corpus_bleu, normalize, read_predictions, read_references, sentence_bleu, split_punctuation
from codebert.cli import main as cli_main


def test_identical_sentences_score_one():
    assert sentence_bleu(["return the maximum value"], "return the maximum value") == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_single_reference():
    # unigrams 5/6, bigrams (3+1)/(5+1), trigrams (1+1)/(3+1)... see below; equal lengths: no penalty
    # hyp: the cat sat on a mat | ref: the cat sat on the mat
    # 1-grams: 5 of 6; 2-grams: the cat, cat sat, sat on = 3 of 5; 3-grams: the cat sat, cat sat on = 2 of 4;
    # 4-grams: the cat sat on = 1 of 3. Orders 2-4 add one to both counts.
    expected = math.exp((math.log(5 / 6) + math.log(4 / 6) + math.log(3 / 5) + math.log(2 / 4)) / 4)
    assert sentence_bleu(["the cat sat on the mat"], "the cat sat on a mat") == pytest.approx(expected, abs=1e-12)


def test_brevity_penalty_uses_plus_one_lengths():
    # every n-gram matches; BP = exp(1 - (6 + 1) / (3 + 1))
    assert sentence_bleu(["a b c d e f"], "a b c") == pytest.approx(math.exp(1 - 7 / 4), abs=1e-12)


def test_several_references_clip_by_the_max_count_and_use_the_shortest_length():
    refs = ["the the cat", "the cat sat on the mat today"]
    # hyp: the the the cat -> 1-grams min(3, 2) + 1 = 3 of 4; 2-grams: "the the" once + "the cat" = 2 of 3;
    # 3-grams: "the the cat" = 1 of 2; 4-grams: 0 of 1; shortest reference 3 < 4 tokens: no penalty.
    expected = math.exp((math.log(3 / 4) + math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2)) / 4)
    assert sentence_bleu(refs, "the the the cat") == pytest.approx(expected, abs=1e-12)


def test_empty_prediction_scores_exp_minus_reference_length():
    # no n-grams at all: every log precision is log(tiny / tiny) or log(1 / 1) = 0; BP = 1 - (3 + 1) / 1
    assert sentence_bleu(["get the value"], "") == pytest.approx(math.exp(-3), abs=1e-15)


def test_punctuation_only_prediction():
    # "..." -> ". . ." (3 tokens); the reference "returns the value ." has one "."
    expected = math.exp((math.log(1 / 3) + math.log(1 / 3) + math.log(1 / 2) + math.log(1 / 1)) / 4 + (1 - 5 / 4))
    assert sentence_bleu([split_punctuation("returns the value .")], split_punctuation("...")) == pytest.approx(expected, abs=1e-12)


def test_no_unigram_in_common_scores_zero():
    assert sentence_bleu(["get value"], "set key") < 1e-70


def test_very_long_sentences_stay_finite():
    words = " ".join(f"w{i % 97}" for i in range(2000))
    assert sentence_bleu([words], words) == pytest.approx(1.0, abs=1e-12)
    assert 0 < sentence_bleu([words], words[: len(words) // 3]) < 1


def test_nist_normalisation_splits_punctuation_but_not_numbers():
    # a dash is split only after a digit; periods and commas only next to a non-digit
    assert normalize("Costs 1,000.5 e-mail 2-3 (ok).") == ["costs", "1,000.5", "e-mail", "2", "-", "3", "(", "ok", ")", "."]
    assert normalize("a &quot;b&quot; &amp; c") == ["a", '"', "b", '"', "&", "c"]


def test_files_are_read_as_the_evaluator_reads_them(tmp_path):
    ref = tmp_path / "ref.txt"
    pred = tmp_path / "pred.txt"
    ref.write_text("0\tReturns the Value.\n1\tget a key\n1\tfetch the key\n2\tnever predicted\n")
    pred.write_text("0\treturns the value .\n1\tget the key\n9\tno such reference\n")
    references, predictions = read_references(ref), read_predictions(pred)
    assert references["1"] == ["get a key", "fetch the key"]
    score, scored = corpus_bleu(references, predictions)
    assert scored == 2
    second = sentence_bleu(["get a key", "fetch the key"], "get the key")
    assert score == pytest.approx((1.0 + second) * 100 / 2, abs=1e-9)


def test_cli_prints_the_score_and_rejects_a_malformed_reference(tmp_path, capsys):
    ref, pred = tmp_path / "ref.txt", tmp_path / "pred.txt"
    ref.write_text("0\tget the value of x\n")
    pred.write_text("0\tget the value of x\n")
    assert cli_main(["bleu", str(ref), str(pred), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["bleu"] == pytest.approx(100.0)
    ref.write_text("0\tget\tthe value\n")
    assert cli_main(["bleu", str(ref), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "ref.txt:1" in err and err.count("\n") == 1
