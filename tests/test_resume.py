"""Every fine-tuning (bi-encoder, cross-encoder, code-to-doc) killed mid-run resumes to the same model.

Each saves its checkpoints in its own layout (an encoder folder, a classifier folder, an encoder
folder plus a decoder file); resuming must read that layout back, not only the pre-training one.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from codebert.code2nl import stage as code2nl
from codebert.cli import main as cli_main
from codebert.config import load_config, read_preset
from codebert.search import finetune

from conftest import CORPUS, run_killed_at_batch

FLAGS = {"max_steps": "6", "save_every": "2", "eval_every": "3", "log_every": "1", "progress": "false", "threads": "1"}


def search_config(model, out, mode):
    flags = {"model": str(model), "data": str(CORPUS), "out": str(out), "mode": mode, **FLAGS}
    return load_config(finetune.SearchFinetuneConfig, read_preset("tiny", "search"), flags)


def code2nl_config(model, out, _mode):
    flags = {"model": str(model), "data": str(CORPUS), "out": str(out), **FLAGS}
    return load_config(code2nl.Code2nlFinetuneConfig, read_preset("tiny", "code2nl"), flags)


RUNS = {
    "bi": (finetune.main, search_config),
    "cross": (finetune.main, search_config),
    "code2nl": (code2nl.finetune_main, code2nl_config),
}


def weights(folder):
    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        found.update({f"{file.name}:{k}": v for k, v in load_file(str(file)).items()})
    return found


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_killed_fine_tuning_resumes_to_the_same_weights(kind, tmp_path, tiny_model_dir, monkeypatch):
    main, make_config = RUNS[kind]
    main(make_config(tiny_model_dir, tmp_path / "straight", kind))

    # killed during step 5, after the checkpoint of step 4
    run_killed_at_batch(monkeypatch, 5, lambda: main(make_config(tiny_model_dir, tmp_path / "killed", kind)))
    assert sorted(p.name for p in (tmp_path / "killed").glob("step-*")) == ["step-00000002", "step-00000004"]

    config = make_config(tiny_model_dir, tmp_path / "killed", kind)
    config.resume = "auto"
    main(config)

    straight, resumed = weights(tmp_path / "straight" / "final"), weights(tmp_path / "killed" / "final")
    assert straight and straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.parametrize("first, second, words", [
    ("bi", "code2nl", "not a checkpoint of this model (no decoder.safetensors)"),
    ("code2nl", "bi", "checkpoint does not match the model"),
])
def test_resuming_a_run_of_another_kind_is_a_one_line_error(first, second, words, tmp_path, tiny_model_dir, capsys):
    main, make_config = RUNS[first]
    config = make_config(tiny_model_dir, tmp_path / "run", first)
    config.max_steps = 2
    main(config)
    command = {"bi": ["search", "finetune", "--config", "tiny", "--mode", "bi"], "code2nl": ["code2nl", "finetune", "--config", "tiny"]}[second]
    capsys.readouterr()
    code = cli_main([*command, "--model", str(tiny_model_dir), "--data", str(CORPUS), "--out", str(tmp_path / "run"),
                     "--max-steps", "3", "--resume", "auto", "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err
    assert code != 0
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
