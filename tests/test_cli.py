"""The command line: stages listed, presets + flags merged, every problem reported at once, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from codebert.cli import main
from codebert.config import ConfigError, load_config, option
from conftest import FIXTURES, SAMPLES


@dataclass
class Example:
    name: str = option("x", "a name")
    steps: int = option(10, "how many steps")
    lr: float = option(1e-4, "learning rate")
    mode: Literal["a", "b"] = option("a", "the mode")
    tags: list[str] = option([], "tags")
    fast: bool = option(False, "go fast")
    path: Path | None = option(None, "somewhere")

    def validate(self):
        return ["--steps: must be positive"] if self.steps <= 0 else []


def test_defaults_then_preset_then_flags():
    cfg = load_config(Example, {"steps": 20, "lr": 0.5}, {"lr": "3e-4", "tags": ["p", "q"], "fast": True})
    assert (cfg.steps, cfg.lr, cfg.tags, cfg.fast, cfg.mode) == (20, 3e-4, ["p", "q"], True, "a")
    assert load_config(Example, None, {"path": "none"}).path is None


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(Example, {"stepz": 3, "mode": "c"}, {"lr": "abc", "steps": "1.5", "fast": "maybe"})
    problems = err.value.problems
    assert len(problems) == 5
    text = "\n".join(problems)
    for needle in ("stepz (in the config file): unknown option", "mode", "--lr: 'abc' is not a number",
                   "--steps: '1.5' is not an integer", "--fast"):
        assert needle in text


def test_validate_runs_after_types_are_right():
    with pytest.raises(ConfigError, match="must be positive"):
        load_config(Example, None, {"steps": "0"})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codebert", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_stages():
    out = run_cli("--help")
    assert out.returncode == 0
    for stage in ("corpus", "tokenizer", "quickstart"):
        assert stage in out.stdout
    assert "extract" in run_cli("corpus", "--help").stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["corpus", "extract", "/no/such/dir", "--out", "x"], "does not exist"),
        (["corpus", "extract", str(SAMPLES), "--out", "x", "--workers", "two", "--bogus", "1"], "--bogus: unknown option"),
        (["corpus", "stats", "/no/such/dir"], "no such directory"),
        (["tokenizer", "train", "--data", "/nope", "--out", "x", "--config", "nope.yaml"], "neither a file nor a preset"),
        (["code2nl", "evaluate", "--model", "m", "--data", str(SAMPLES), "--out", "x", "--beam-size", "-3", "--batch-size", "0"],
         "--beam-size: must be >= 0"),
    ],
)
def test_user_mistakes_end_in_a_short_error_not_a_traceback(args, needle, tmp_path):
    out = run_cli(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_two_problems_in_one_message(tmp_path):
    out = run_cli("corpus", "extract", str(SAMPLES), "--out", str(tmp_path), "--workers", "two", "--seed", "x",
                  "--valid-fraction", "2")
    assert out.returncode == 2
    # Two values of the wrong type and the failed range checks, in one message.
    assert "--workers" in out.stderr and "--seed" in out.stderr and "--valid-fraction" in out.stderr
    assert "4 problem(s)" in out.stderr  # the fraction also leaves no room for train


def test_extract_then_stats_with_json_last_line(tmp_path, capsys):
    assert main(["corpus", "extract", str(SAMPLES), "--out", str(tmp_path / "c"), "--no-progress",
                 "--valid-fraction", "0", "--test-fraction", "0", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["counts"]["go"]["train"] == 2
    assert main(["corpus", "stats", str(tmp_path / "c"), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    stats = json.loads(out[-1])["stats"]
    assert stats["javascript"]["train"]["records"] == 5
    assert any(line.startswith("| total") for line in out)


def test_preset_by_name(tmp_path, capsys):
    corpus = tmp_path / "c"
    main(["corpus", "extract", str(SAMPLES), "--out", str(corpus), "--no-progress", "--valid-fraction", "0", "--test-fraction", "0"])
    assert main(["tokenizer", "train", "--config", "tiny", "--data", str(corpus), "--out", str(tmp_path / "t"),
                 "--min-frequency", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 600 < figures["vocab_size"] <= 1000  # tiny.yaml asks 1000; the sample corpus has fewer merges
    preset = tmp_path / "mine.yaml"
    preset.write_text("tokenizer:\n  vocab_size: 500\n  min_frequency: 5\n")
    assert main(["tokenizer", "train", "--config", str(preset), "--data", str(corpus), "--out", str(tmp_path / "t2"),
                 "--min-frequency", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["vocab_size"] == 500  # the preset's size; the flag overrode its min_frequency


def problems_of(module: str, config: str, flags: dict[str, str]) -> list[str]:
    import importlib

    with pytest.raises(ConfigError) as err:
        load_config(getattr(importlib.import_module(module), config), None, flags)
    return err.value.problems


PRETRAIN = {"data": str(SAMPLES), "out": "run", "tokenizer": str(SAMPLES), "objective": "mlm"}
INDEX = {"paths": [str(SAMPLES)], "model": "m", "out": "idx"}


@pytest.mark.parametrize(
    "module,config,flags,needle",
    [
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "dropout": "-1"}, "--dropout: must be in [0, 1)"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "dropout": "1.5"}, "--dropout: must be in [0, 1)"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "num_attention_heads": "0"}, "--num-attention-heads: must be >= 1"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "hidden_size": "-32"}, "--hidden-size: must be >= 1"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "num_hidden_layers": "-2"}, "--num-hidden-layers: must be >= 1"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "adam_beta2": "2"}, "--adam-beta2: must be in [0, 1)"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "adam_epsilon": "0"}, "--adam-epsilon: must be > 0"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "mlm_weight": "-1"}, "--mlm-weight: must be >= 0"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "mlm_weight": "0"}, "--objective mlm has nothing to learn"),
        ("codebert.pretrain.stage", "PretrainConfig", {**PRETRAIN, "valid_examples": "-5"}, "--valid-examples: must be >= 0"),
        ("codebert.search.finetune", "SearchFinetuneConfig", {"model": "m", "data": str(SAMPLES), "out": "o", "dropout": "1"},
         "--dropout: must be in [0, 1)"),
        ("codebert.code2nl.stage", "Code2nlFinetuneConfig", {"model": "m", "data": str(SAMPLES), "out": "o", "max_records": "-1"},
         "--max-records: must be >= 0"),
        ("codebert.pretrain.generators", "FitGeneratorsConfig", {"data": str(SAMPLES), "tokenizer": "t", "out": "o", "rate_sample": "-3"},
         "--rate-sample: must be >= 1"),
        ("codebert.tool.index", "IndexConfig", {**INDEX, "max_length": "2"}, "--max-length: must be 0 (the model's setting) or >= 8"),
        ("codebert.tool.index", "IndexConfig", {**INDEX, "max_length": "-3"}, "--max-length: must be 0 (the model's setting) or >= 8"),
        ("codebert.tool.index", "IndexConfig", {**INDEX, "threads": "-2"}, "--threads: must be >= 0"),
        ("codebert.tool.query", "QueryConfig", {"index": "idx", "text": "find", "threads": "-2"}, "--threads: must be >= 0"),
        ("codebert.tool.serve", "ServeConfig", {"index": "idx", "threads": "-2"}, "--threads: must be >= 0"),
    ],
)
def test_numeric_options_are_range_checked(module, config, flags, needle):
    assert any(needle in p for p in problems_of(module, config, flags))


def test_several_bad_numbers_are_one_error_listing_all(capsys):
    code = main(["pretrain", "--data", str(SAMPLES), "--out", "run", "--tokenizer", str(SAMPLES), "--objective", "mlm",
                 "--dropout", "-1", "--num-attention-heads", "0", "--hidden-size", "-32", "--adam-beta2", "2",
                 "--num-hidden-layers", "-2", "--mlm-weight", "-1", "--valid-examples", "-5"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("codebert: error: 7 problem(s) in the configuration:")
    for flag in ("--dropout", "--num-attention-heads", "--hidden-size", "--adam-beta2", "--num-hidden-layers",
                 "--mlm-weight", "--valid-examples"):
        assert f"  - {flag}: must be" in err


def test_an_existing_file_as_index_out_is_a_config_error(tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    assert main(["index", str(SAMPLES), "--model", "m", "--out", str(taken), "--no-progress"]) == 2
    assert f"--out {taken}: exists and is not a folder" in capsys.readouterr().err
    assert taken.read_text() == "mine\n"


@pytest.mark.parametrize("stage", [
    ["index", str(SAMPLES), "--model", "m", "--no-progress"],
    ["tokenizer", "train", "--data", str(FIXTURES / "corpus"), "--vocab-size", "300", "--max-records", "20"],
])
def test_an_unwritable_out_is_one_line_not_a_traceback(stage, capsys):
    assert main([*stage, "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("codebert: error: /proc/") and "No such file or directory" in err


def test_verbose_keeps_the_traceback_of_an_os_error(capsys):
    assert main(["index", str(SAMPLES), "--model", "m", "--no-progress", "--out", "/proc/x", "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1] == "codebert: error: /proc/x: No such file or directory"
