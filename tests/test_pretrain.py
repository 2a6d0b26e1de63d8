"""Pre-training end to end on tiny configs: every objective, exact resume, two processes with torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from codebert.pretrain import stage as pretrain
from codebert.cli import main as cli_main
from codebert.config import load_config, read_preset
from conftest import CORPUS, run_killed_at_batch


def config(out, tokenizer_dir, generators_dir, **flags):
    flags = {"data": str(CORPUS), "out": str(out), "tokenizer": str(tokenizer_dir), "generators": str(generators_dir),
             "progress": "false", **flags}
    return load_config(pretrain.PretrainConfig, read_preset("tiny", "pretrain"), flags)


@pytest.mark.parametrize("objective", ["mlm", "rtd", "mlm+rtd"])
def test_each_objective_trains_and_saves_a_transformers_checkpoint(tmp_path, tokenizer_dir, generators_dir, objective):
    figures = pretrain.main(config(tmp_path / "run", tokenizer_dir, generators_dir, objective=objective, max_steps="8"))
    assert figures["step"] == 8
    assert ("mlm_loss" in figures) == ("mlm" in objective)
    assert ("rtd_loss" in figures) == ("rtd" in objective)
    if "rtd" in objective:
        assert 0.3 < figures["replaced_rate"] <= 1.0
    final = tmp_path / "run" / "final"
    assert {"config.json", "model.safetensors", "tokenizer.json", "run_config.json"} <= {p.name for p in final.iterdir()}
    assert not (final / "training_state.pt").exists()
    assert json.loads((final / "steps.json").read_text()) == {"step": 8}
    card = (final / "README.md").read_text()  # a model card, as the hub reads one
    assert card.startswith("---\nbase_model: null\nlibrary_name: transformers\npipeline_tag: fill-mask") and "| steps run | 8 |" in card
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [5, 8]
    assert "valid_mlm_acc" in lines[-1]


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, tokenizer_dir, generators_dir):
    out = tmp_path_factory.mktemp("mlm") / "run"
    # Validated on all 60 valid pairs (~470 masked tokens): the preset's 16 leave the figure a few tokens' noise.
    figures = pretrain.main(config(out, tokenizer_dir, generators_dir, objective="mlm", max_steps="60",
                                   learning_rate="0.003", warmup_steps="5", log_every="60", valid_examples="60"))
    return out, figures


def test_mlm_learns_on_the_fixture_corpus(mlm_run):
    out, figures = mlm_run
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 60
    # Frequent code tokens are learned within a minute. Chance is 1/1000 and a uniform guess costs ln(1000) = 6.91
    # nats; measured 0.087-0.117 and 5.3-5.4 nats (the accuracy is the share of the few tokens predicted
    # everywhere, so it moves with which positions validation masks).
    assert figures["valid_mlm_acc"] > 0.05 and figures["valid_mlm_loss"] < 5.8


def test_checkpoint_predicts_a_mask_in_plain_transformers(mlm_run):
    out, _ = mlm_run
    fill = pipeline("fill-mask", model=str(out / "final"), tokenizer=str(out / "final"))
    predictions = fill("def get ( <mask> ) : return self . value", top_k=10)
    assert " self" in [p["token_str"] for p in predictions]
    assert predictions[0]["score"] > 10 / 1000  # far from uniform over the 1,000-token vocabulary


def read_weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("log_every", ["1", "4"])  # 4: the checkpoint of step 6 falls inside the line of steps 5-8
def test_resume_after_a_kill_is_exact(tmp_path, tokenizer_dir, generators_dir, monkeypatch, log_every):
    flags = dict(objective="mlm+rtd", max_steps="9", save_every="3", log_every=log_every, dropout="0.1")
    pretrain.main(config(tmp_path / "straight", tokenizer_dir, generators_dir, **flags))

    # killed during step 8, after the checkpoint of step 6
    run_killed_at_batch(monkeypatch, 8, lambda: pretrain.main(config(tmp_path / "killed", tokenizer_dir, generators_dir, **flags)))
    assert sorted(p.name for p in (tmp_path / "killed").glob("step-*")) == ["step-00000003", "step-00000006"]
    pretrain.main(config(tmp_path / "killed", tokenizer_dir, generators_dir, resume="auto", **flags))

    straight, resumed = read_weights(tmp_path / "straight" / "final"), read_weights(tmp_path / "killed" / "final")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]  # noqa: E731
    assert strip(a) == strip(b)


def test_two_processes_with_torchrun(tmp_path, tokenizer_dir, generators_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "codebert",
           "pretrain", "--config", "tiny", "--data", str(CORPUS), "--out", str(tmp_path / "ddp"), "--tokenizer",
           str(tokenizer_dir), "--generators", str(generators_dir), "--max-steps", "6", "--save-every", "3",
           "--no-progress", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["step"] == 6
    assert (tmp_path / "ddp" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "ddp" / "step-00000006" / "training_state.pt").is_file()


def test_bad_pretrain_options_are_reported_together(tmp_path, capsys):
    code = cli_main(["pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--objective", "rtd",
                     "--mask-rate", "2", "--max-steps", "0"])
    err = capsys.readouterr().err
    assert code == 2
    for needle in ("--data", "--tokenizer", "--generators", "--mask-rate", "--max-steps"):
        assert needle in err


def test_plot_draws_the_learning_curves_of_several_runs(mlm_run, tmp_path):
    from codebert.experiments.plot import PlotConfig
    from codebert.experiments.plot import main as plot_main

    out, _ = mlm_run
    figures = plot_main(PlotConfig(runs=[out, out], out=tmp_path / "curves.png", labels=["a", "b"]))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures["out"] == str(tmp_path / "curves.png")


def test_max_minutes_stops_early_and_still_saves(tmp_path, tokenizer_dir, generators_dir):
    figures = pretrain.main(config(tmp_path / "run", tokenizer_dir, generators_dir, objective="mlm",
                                   max_steps="100000", max_minutes="0.001"))
    assert figures["step"] < 100000
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_code_only_pretraining_masks_code_without_docs(tmp_path, tokenizer_dir, generators_dir):
    from codebert.pretrain.data import encode_corpus
    from codebert.backbone import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    code_only = encode_corpus(CORPUS, tok, "train", None, include_unimodal=True, code_only=True)
    pairs = encode_corpus(CORPUS, tok, "train", None, include_unimodal=False)
    assert all(len(nl) == 0 for nl in code_only.nl)
    assert len(code_only) > len(pairs)  # unimodal code joins the pairs' code
    figures = pretrain.main(config(tmp_path / "run", tokenizer_dir, generators_dir, objective="mlm", modality="code", max_steps="4"))
    assert figures["step"] == 4 and "mlm_loss" in figures


def test_code_only_pretraining_is_an_mlm_baseline(tmp_path, tokenizer_dir, generators_dir):
    with pytest.raises(Exception, match="--modality code"):
        config(tmp_path / "run", tokenizer_dir, generators_dir, objective="rtd", modality="code")


def test_auto_precision_is_read_from_the_cpu_flags_not_timed():
    """`auto` must resolve the same way every time on a machine: a timed race flipped under load and
    made a resumed run (or a second run of the same seed) train in another precision."""
    from codebert.training.loop import cpu_runs_bf16

    assert cpu_runs_bf16("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_runs_bf16("processor : 0\nFeatures : fp asimd bf16 i8mm\n")
    assert not cpu_runs_bf16("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert not cpu_runs_bf16("")
    assert len({cpu_runs_bf16() for _ in range(20)}) == 1


def pretrain_args(out, tokenizer_dir) -> list[str]:
    return ["pretrain", "--config", "tiny", "--data", str(CORPUS), "--out", str(out), "--tokenizer", str(tokenizer_dir),
            "--objective", "mlm", "--max-steps", "2", "--no-progress"]


def test_a_full_disk_is_one_line_and_leaves_no_half_checkpoint(tmp_path, tokenizer_dir, monkeypatch, capsys):
    import errno
    from pathlib import Path

    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name == "run_config.json":  # a write in the middle of saving final/
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert cli_main(pretrain_args(tmp_path / "run", tokenizer_dir)) == 2
    err = capsys.readouterr().err
    assert err == "codebert: error: No space left on device\n"
    assert not (tmp_path / "run" / "final").exists()  # the partial save stays under its temporary name


def test_an_unwritable_out_is_one_line(tokenizer_dir, capsys):
    assert cli_main(pretrain_args("/proc/x", tokenizer_dir)) == 2
    assert capsys.readouterr().err == "codebert: error: /proc/x: No such file or directory\n"


def test_a_new_objective_is_one_class_and_one_registration(tmp_path, tokenizer_dir, generators_dir, monkeypatch):
    """The registry's promise: an objective defined here, in nothing but this test, trains beside MLM
    in one stacked forward pass, with its own rows, loss and metrics, and no other file touched."""
    from codebert.pretrain import objectives

    class CodeOnlyMLM(objectives.Objective):
        """MLM that predicts code positions only (its NL positions stay visible)."""

        name, head = "code-mlm", "mlm"
        seen_rows: list[int] = []

        def rows(self, batch, cfg):
            return ~batch.unimodal

        def view(self, batch, rows, selected, corruptor, rng):
            selected = selected & rows[:, None] & (batch.segments == objectives.CODE)
            ids = corruptor.masked(batch, selected, rng)
            self.seen_rows.append(int(rows.sum()))
            return objectives.View(rows, ids[rows], selected[rows], {"tokens": batch.input_ids[rows][selected[rows]]})

        def loss(self, logits, view, reduction):
            loss = objectives.mlm_loss(logits, view.targets["tokens"].to(logits.device))
            return loss, {"code_mlm_loss": loss.detach()}

    monkeypatch.setitem(objectives.OBJECTIVES, "code-mlm", CodeOnlyMLM())
    assert pretrain.PretrainConfig.validate(config(tmp_path, tokenizer_dir, generators_dir, objective="mlm+code-mlm")) == []
    figures = pretrain.main(config(tmp_path / "run", tokenizer_dir, generators_dir, objective="mlm+code-mlm", max_steps="4",
                                   log_every="1", loss_reduction="mean"))
    assert figures["step"] == 4 and CodeOnlyMLM.seen_rows and min(CodeOnlyMLM.seen_rows) > 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    # The summed loss is both parts (weights 1: the config has no --code-mlm-weight).
    assert all(abs(r["loss"] - r["mlm_loss"] - r["code_mlm_loss"]) < 1e-3 * r["loss"] for r in lines)
    with pytest.raises(ValueError, match="registered objectives"):
        objectives.parse("mlm+nope")


def test_an_unknown_objective_is_a_one_line_error(tmp_path, tokenizer_dir, generators_dir, capsys):
    code = cli_main(["pretrain", "--data", str(CORPUS), "--out", str(tmp_path / "r"), "--tokenizer", str(tokenizer_dir),
                     "--objective", "mlm+electra"])
    err = capsys.readouterr().err
    assert code != 0 and "registered objectives" in err and "mlm, rtd" in err and "Traceback" not in err


def loss_parts(tmp_path, tokenizer_dir, generators_dir, **flags):
    """The pieces of one pre-training step on the fixture corpus: config, batch, corruptor, tiny model."""
    from codebert.backbone import load_tokenizer
    from codebert.pretrain.data import collate, encode_corpus
    from codebert.pretrain.model import new_model

    cfg = config(tmp_path / "run", tokenizer_dir, generators_dir, **flags)
    tokenizer = load_tokenizer(tokenizer_dir)
    corpus = encode_corpus(CORPUS, tokenizer, "train", [], include_unimodal=True, max_records=40)
    corruptor = pretrain.Corruptor(cfg, tokenizer, pretrain.load_generators(generators_dir))
    rows = list(range(30, 50))  # the end of the pairs and the start of the unimodal code: both kinds
    batch = collate(corpus, rows, cfg.max_length, corruptor.layout)
    assert batch.unimodal.any() and (~batch.unimodal).any()
    torch.manual_seed(0)
    return cfg, batch, corruptor, new_model(cfg.model_shape(), len(tokenizer), tokenizer).eval()


def test_the_paper_weighting_sums_both_losses_over_one_shared_count(tmp_path, tokenizer_dir, generators_dir):
    # Eq. 14: (sum of MLM CE over the masked positions + sum of RTD BCE over every NL and code token
    # of the RTD rows) / one count, the batch's selected positions. With the same batch and seed, the
    # mean reduction adds the two means instead: RTD's relative weight is what changes.
    from codebert.pretrain import objectives

    figures = {}
    for reduction in ("sum", "mean"):
        cfg, batch, corruptor, model = loss_parts(tmp_path, tokenizer_dir, generators_dir, loss_reduction=reduction)
        with torch.no_grad():
            figures[reduction] = pretrain.make_loss_fn(cfg, corruptor, pretrain.TorchRng(7), torch.device("cpu"))(model, batch)
    selected = objectives.select_positions(batch.segments, cfg.mask_rate, torch.Generator().manual_seed(7))
    n_masked = int((selected & ~batch.unimodal[:, None]).sum())  # MLM reads the pairs only
    n_text = int((batch.segments > 0).sum())  # RTD reads every row (unimodal code too)
    paper = figures["sum"]
    assert abs(float(paper["loss"]) * int(selected.sum()) - (float(paper["mlm_loss"]) * n_masked + paper["rtd_loss"] * n_text)) < 1e-3 * n_text
    mean = figures["mean"]
    assert abs(float(mean["mlm_loss"]) - float(paper["mlm_loss"])) < 1e-5  # the same masked positions, the same model
    assert float(mean["loss"]) < float(paper["loss"])  # RTD weighs n_text / n_selected (~1 / 0.15) times more under sum
    assert n_text / int(selected.sum()) > 5


def test_mlm_and_rtd_use_one_selection_of_positions(tmp_path, tokenizer_dir, generators_dir):
    # The paper replaces the positions MLM masked (m^w, m^c): on the pairs, the RTD view's candidates
    # for replacement are exactly the MLM view's masked positions.
    from codebert.pretrain import objectives

    cfg, batch, corruptor, _ = loss_parts(tmp_path, tokenizer_dir, generators_dir)
    rng = torch.Generator().manual_seed(3)
    mlm, rtd = objectives.OBJECTIVES["mlm"], objectives.OBJECTIVES["rtd"]
    mlm_rows, rtd_rows = mlm.rows(batch, cfg), rtd.rows(batch, cfg)
    selected = objectives.select_positions(batch.segments, cfg.mask_rate, rng, rows=mlm_rows | rtd_rows)
    mlm_view = mlm.view(batch, mlm_rows, selected, corruptor, rng)
    rtd_view = rtd.view(batch, rtd_rows, selected, corruptor, rng)
    pairs = ~batch.unimodal
    assert torch.equal(mlm_view.positions, rtd_view.targets["selected"][pairs[rtd_rows]])
    changed = rtd_view.input_ids != batch.input_ids[rtd_rows]
    assert changed.any() and not (changed & ~rtd_view.targets["selected"]).any()  # only selected positions change


def test_leave_one_out_is_refused_against_generators_fit_on_other_records(tmp_path, tokenizer_dir, generators_dir, capsys):
    from codebert.pretrain.generators import FitGeneratorsConfig, fit_main

    partial = tmp_path / "gen-40"
    fit_main(FitGeneratorsConfig(data=CORPUS, tokenizer=tokenizer_dir, out=partial, rate_sample=20, max_records=40))
    meta = pretrain.load_generators(partial)["nl"].meta
    assert meta["counted"]["max_records"] == 40 and set(meta["counted"]["files"]) == {"python/train.jsonl.gz"}
    base = ["pretrain", "--data", str(CORPUS), "--tokenizer", str(tokenizer_dir), "--generators", str(partial),
            "--config", "tiny", "--max-steps", "1", "--no-progress"]
    code = cli_main([*base, "--out", str(tmp_path / "all")])  # reads every record: 260 of them were never counted
    err = capsys.readouterr().err
    assert code != 0 and "counted the first 40 records of each file, pre-training reads all" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert cli_main([*base, "--out", str(tmp_path / "fewer"), "--max-records", "30"]) == 0  # records 1-30 were counted
    assert cli_main([*base, "--out", str(tmp_path / "no-loo"), "--no-leave-one-out"]) == 0
    copy = tmp_path / "corpus"  # another corpus, same layout: one changed file is enough
    shutil.copytree(CORPUS, copy)
    (copy / "python" / "unimodal.jsonl.gz").write_bytes((CORPUS / "python" / "test.jsonl.gz").read_bytes())
    code = cli_main(["pretrain", "--data", str(copy), "--tokenizer", str(tokenizer_dir), "--generators", str(generators_dir),
                     "--config", "tiny", "--max-steps", "1", "--no-progress", "--out", str(tmp_path / "other")])
    assert code != 0 and "the code generator counted another version of python/unimodal.jsonl.gz" in capsys.readouterr().err
