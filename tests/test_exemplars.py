"""Retrieved exemplars: the nearest training function's summary, read before the code (code2nl --exemplar-tokens)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from codebert.cli import main as cli_main
from codebert.code2nl import stage as code2nl
from codebert.code2nl.data import read_csn, source_input, wrap
from codebert.code2nl.exemplars import EXEMPLAR_DIR, ExemplarBank
from codebert.code2nl.model import load_seq2seq
from codebert.config import ConfigError, load_config, read_preset
from codebert.inputs import Layout
from codebert.backbone import load_tokenizer
from conftest import CORPUS

SOURCES = ["def parse_memory_size(text): return int(text.rstrip('k')) * 1024",
           "def parse_memory_limit(text): return int(text.rstrip('m')) * 1024 * 1024",
           "func OpenDatabase(path string) (*DB, error) { return sql.Open(path) }",
           "def send_email(to, body): smtp.send(to, body)"]
SUMMARIES = ["Parse a size in kilobytes.", "Parse a memory limit in megabytes.", "Open the database at path.", "Send an email."]
LANGUAGES = ["python", "python", "go", "python"]


def test_a_function_gets_the_summary_of_its_nearest_training_function_from_another_repository(tmp_path):
    bank = ExemplarBank.build(SOURCES, SUMMARIES, LANGUAGES, ["a", "b", "c", "d"])
    query = ["def parse_memory(text): return int(text) * 1024"]
    assert bank.nearest(query, ["python"]) == [SUMMARIES[0]] or bank.nearest(query, ["python"]) == [SUMMARIES[1]]
    best = bank.nearest(query, ["python"])[0]
    # the same query from the best match's own repository is given the next one (csn splits by repository)
    own = "a" if best == SUMMARIES[0] else "b"
    assert bank.nearest(query, ["python"], [own])[0] not in ("", best)
    # a language is searched among its own functions only; one the bank lacks gets no exemplar
    assert bank.nearest(["func Open(path string) error { return sql.Open(path) }"], ["go"]) == [SUMMARIES[2]]
    assert bank.nearest(query, ["ruby"]) == [""]
    # a training function is never its own exemplar (its repository is its own)
    found = bank.nearest(SOURCES, LANGUAGES, ["a", "b", "c", "d"])
    assert all(f != s for f, s in zip(found, SUMMARIES)) and found[2] == ""  # go has one function: nothing else to give
    # saved and loaded (as a model folder carries it), it retrieves the same
    bank.save(tmp_path / EXEMPLAR_DIR)
    again = ExemplarBank.load(tmp_path / EXEMPLAR_DIR)
    queries = [*SOURCES, *query]
    assert again.nearest(queries, [*LANGUAGES, "python"]) == bank.nearest(queries, [*LANGUAGES, "python"])


def test_the_exemplar_is_read_before_the_code_and_cut_to_its_tokens(tokenizer_dir):
    layout = Layout.of(load_tokenizer(tokenizer_dir))
    code, exemplar = np.arange(100, 200), np.arange(300, 340)
    ids = source_input(code, 64, layout, exemplar, 16)
    assert len(ids) == 64 and ids[: len(layout.prefix)] == list(layout.prefix)
    start = len(layout.prefix)
    assert ids[start : start + 16] == list(range(300, 316))  # the exemplar first, cut to 16 tokens
    assert ids[start + 16 + len(layout.middle)] == 100  # then the code from its start
    assert source_input(code, 64, layout, np.array([], dtype=np.int64), 16)[start + len(layout.middle)] == 100  # none found
    assert source_input(code, 64, layout, exemplar, 0) == wrap(code, 64, layout)  # the paper's input without exemplars


def test_a_model_trained_with_exemplars_carries_them_and_reads_them(tmp_path, tiny_model_dir, capsys):
    flags = {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path / "run"), "progress": "false", "threads": "1",
             "max_steps": "4", "eval_every": "0", "save_every": "0", "exemplar_tokens": "16", "max_source_length": "64"}
    code2nl.finetune_main(load_config(code2nl.Code2nlFinetuneConfig, read_preset("tiny", "code2nl"), flags))
    best = tmp_path / "run" / "best"
    assert load_seq2seq(best).spec.exemplar_tokens == 16 and (best / EXEMPLAR_DIR / "python").is_dir()
    train = read_csn(CORPUS, "train", ["python"], 0)
    assert len(json.loads((best / EXEMPLAR_DIR / "python" / "summaries.json").read_text())["summaries"]) == len(train.ids)

    # the exemplar is part of what the model reads: another one changes the scores of the same code and doc
    model, tokenizer = load_seq2seq(best).eval(), load_tokenizer(best)
    layout = Layout.of(tokenizer)
    code = np.array(tokenizer("def f(x): return x")["input_ids"][1:-1])
    scores = []
    for exemplar in ("Return the value.", "Open a socket to the server and send every pending message."):
        ids = torch.tensor([source_input(code, 64, layout, np.array(tokenizer(exemplar)["input_ids"][1:-1]), 16)])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            scores.append(model.decode(model.encode(ids, mask), mask, torch.tensor([[0, 5, 6]]), ids))
    assert not torch.allclose(scores[0], scores[1])

    out = tmp_path / "eval"
    assert cli_main(["code2nl", "evaluate", "--model", str(best), "--data", str(CORPUS), "--max-records", "4", "--beam-size", "2",
                     "--out", str(out), "--no-progress"]) == 0
    assert len((out / "predictions.txt").read_text().splitlines()) == 4
    # a model folder copied without its exemplars: one line, not a traceback
    shutil.rmtree(best / EXEMPLAR_DIR)
    capsys.readouterr()
    assert cli_main(["code2nl", "evaluate", "--model", str(best), "--data", str(CORPUS), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "exemplars" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_exemplar_tokens_beyond_half_the_source_is_refused(tiny_model_dir, tmp_path):
    flags = {"model": str(tiny_model_dir), "data": str(CORPUS), "out": str(tmp_path), "exemplar_tokens": "40", "max_source_length": "64"}
    with pytest.raises(ConfigError, match="--exemplar-tokens: must be >= 0 and at most half"):
        load_config(code2nl.Code2nlFinetuneConfig, read_preset("tiny", "code2nl"), flags)
