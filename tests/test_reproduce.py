"""`codebert reproduce --scale tiny` end to end on the fixture corpus: every stage, the report, re-runs."""

from __future__ import annotations

import json

import pytest

from codebert.cli import main as cli_main
from codebert.config import load_config, read_preset
from codebert.experiments.reproduce import Budget, variants_of
from conftest import CORPUS


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "run"
    # The fixture corpus stands in for the unseen language too: the stage does not care which it is.
    code = cli_main(["reproduce", "--scale", "tiny", "--data", str(CORPUS), "--out", str(out), "--unseen", str(CORPUS), "--no-progress"])
    assert code == 0
    return out


def test_every_table_of_the_paper_is_in_the_report(reproduction):
    report = (reproduction / "report.md").read_text()
    for heading in ("## Pre-training", "## Table 2", "## Table 4", "## Table 5", "## Table 6", "## The paper's orderings"):
        assert heading in report
    table2 = report[report.index("## Table 2"):report.index("## Table 4")]
    for row in ("BM25", "NBoW", "no pre-training", "code-only MLM", "| MLM |", "| RTD |", "MLM+RTD"):
        assert row in table2
    assert "A random ranking scores 0.1799" in table2  # the tiny preset's groups of 20: H_20 / 20
    assert (reproduction / "pretrain_curves.png").stat().st_size > 1000
    assert (reproduction / "search_curves_python.png").stat().st_size > 1000


def test_figures_json_holds_every_unit_and_the_orderings(reproduction):
    figures = json.loads((reproduction / "figures.json").read_text())
    units = figures["units"]
    assert {"tokenizer", "generators", "pretrain/mlm-rtd", "search/bm25", "search/mlm-rtd/python", "probe/mlm",
            "code2nl/rtd", "unseen/none"} <= set(units)
    assert all(u["seconds"] >= 0 for u in units.values())
    assert units["pretrain/mlm"]["step"] == 20  # the tiny preset's steps
    assert units["pretrain/code-only"]["step"] == 20
    assert 0 <= units["search/mlm/python"]["python"] <= 1
    claims = {(o["task"], o["claim"]) for o in figures["orderings"]}
    assert ("code search (macro MRR)", "MLM+RTD beats MLM") in claims
    for o in figures["orderings"]:
        assert o["held"] == (o["better_score"] > o["worse_score"])
        assert "caveat" in o
    report = (reproduction / "report.md").read_text()
    assert "| caveat" in report and "without a caveat" in report
    assert "distinct documents" in report[report.index("## Table 5"):report.index("## Table 6")]


def test_caveats_name_the_sides_that_are_no_evidence():
    from codebert.experiments import report as rr

    # groups of 1,000: a random ranking scores 0.0075, so 3x is 0.0225
    assert rr.search_flags({"MLM": 0.0150, "BM25": 0.61}, 1000) == {"MLM": "MRR under 3x random (0.0075)"}
    # 299 PL items at chance 0.5: two standard errors are 2 * sqrt(0.25 / 299) = 0.0578
    run = {"counts": {"pl": {"all": 299}}, "chance": {"pl": 0.5}, "accuracy": {"pl": {"all": 0.55}}}
    assert rr.probe_flags(run, "pl") == "at chance (50% +/- 5.8)"
    run["accuracy"]["pl"]["all"] = 0.56
    assert rr.probe_flags(run, "pl") is None
    rows = [{"label": "MLM", "distinct_predictions": 1, "predictions": 600}, {"label": "RTD", "distinct_predictions": 300, "predictions": 600}]
    assert rr.code2nl_flags(rows) == {"MLM": "1 distinct of 600 documents"}
    task = "code-to-doc (overall BLEU)"
    found = rr.orderings({task: {"MLM": 9.0, "RTD": 1.0, "no pre-training": 0.5}}, flags={task: rr.code2nl_flags(rows)})
    by_claim = {o["claim"]: o for o in found}
    assert by_claim["MLM beats RTD"]["held"] and by_claim["MLM beats RTD"]["caveat"] == "MLM: 1 distinct of 600 documents"
    assert by_claim["RTD beats no pre-training"]["caveat"] == ""


def test_a_rerun_skips_finished_units_and_redoes_a_missing_one(reproduction, capsys):
    final = reproduction / "pretrain" / "mlm" / "final" / "model.safetensors"
    before = final.stat().st_mtime_ns
    (reproduction / "figures" / "probe__mlm.json").unlink()
    args = ["reproduce", "--scale", "tiny", "--data", str(CORPUS), "--out", str(reproduction), "--unseen", str(CORPUS),
            "--no-progress", "--stages", "probe", "report"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "pretrain/mlm: done before, skipped" in printed
    assert "probe/mlm: running" in printed
    assert final.stat().st_mtime_ns == before
    assert (reproduction / "figures" / "probe__mlm.json").is_file()


def test_unselected_stages_are_skipped(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["reproduce", "--scale", "tiny", "--data", str(CORPUS), "--out", str(out), "--stages", "tokenizer", "report",
                     "--unseen", str(CORPUS), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "tokenizer: running" in printed
    assert "pretrain/mlm: stage pretrain not selected, skipped" in printed
    assert not (out / "pretrain").exists()
    report = (out / "report.md").read_text()
    assert "No pair of finished rows to compare yet." in report
    assert "No `unseen/<variant>` unit has finished yet." in report


@pytest.mark.parametrize("flags, words", [
    (["--scale", "huge"], "--scale"),
    (["--stages", "pretrain", "dance"], "unknown dance"),
    (["--unseen", "/no/such/folder"], "--unseen"),
    (["--variants", "mlm", "bert"], "unknown bert"),
])
def test_user_mistakes_are_reported_without_a_traceback(tmp_path, capsys, flags, words):
    code = cli_main(["reproduce", "--data", str(CORPUS), "--out", str(tmp_path / "run"), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_two_processes_with_torchrun_share_the_units(tmp_path):
    """Training units run on both processes (DDP), the others on the first; every unit ends on a barrier."""
    import os
    import subprocess
    import sys

    import yaml

    from codebert.config import PRESETS_DIR

    preset = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    preset["reproduce"].update(variants=["none", "mlm"], baselines=["bm25"])
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(preset))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "-m", "codebert",
           "reproduce", "--scale", str(tmp_path / "two.yaml"), "--data", str(CORPUS), "--out", str(tmp_path / "run"),
           "--stages", "tokenizer", "pretrain", "search", "report", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("pretrain/mlm: running") == 1  # progress is printed by the first process only
    figures = json.loads((tmp_path / "run" / "figures.json").read_text())
    assert figures["units"]["pretrain/mlm"]["step"] == 20
    assert {r["label"] for r in figures["tables"]["table2"]} == {"BM25", "no pre-training", "MLM"}


def test_init_rows_from_a_bert_family_encoder_without_scratch_rows(tmp_path, capsys, tiny_bert_dir):
    """The CPU preset's shape (`scratch: false`): the backbone zero-shot, fine-tuned directly, and continued."""
    import yaml

    from codebert.config import read_preset

    preset = read_preset("tiny", None)
    preset["reproduce"] = {**preset["reproduce"], "variants": ["mlm"], "scratch": False, "search_mode": "bi",
                           "search_per_language": False, "baselines": ["bm25"], "cross_languages": ["python"],
                           "cross_queries_per_group": 3}
    preset["search_cross"] = {**preset["search"], "max_steps": 4}
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(preset))
    out = tmp_path / "run"
    assert cli_main(["reproduce", "--scale", str(tmp_path / "cpu.yaml"), "--init", str(tiny_bert_dir), "--data", str(CORPUS),
                     "--out", str(out), "--stages", "tokenizer", "pretrain", "search", "code2nl", "report", "--no-progress",
                     "--threads", "1"]) == 0
    report = (out / "report.md").read_text()
    table2 = report[report.index("## Table 2"):report.index("## Table 5")]
    # Table 5 has the paper's IR row, retrieved with the run's first fine-tuned bi-encoder
    table5 = report[report.index("## Table 5"):report.index("## Table 6")]
    assert "| IR (nearest training function's summary) |" in table5 and "| init + MLM " in table5
    ir = json.loads((out / "code2nl" / "ir" / "results.json").read_text())
    assert ir["model"] == str(out / "search" / "init" / "all" / "best") and ir["kind"] == "ir"
    for row in ("BM25", "init, zero-shot (no fine-tuning)", "| init |", "| init + MLM |", "Cross-encoder (the paper's model)",
                "| init, zero-shot + BM25 (", "| init + BM25 (", "| init + MLM + BM25 ("):
        assert row in table2
    chosen = json.loads((out / "search-hybrid" / "init-mlm" / "all" / "valid.json").read_text())["chosen"]
    assert f"| init + MLM + BM25 ({chosen['name']}, chosen on valid) |" in table2
    assert (out / "search-cross" / "init-mlm" / "python" / "results.json").is_file()
    assert "no pre-training" not in table2 and not (out / "pretrain" / "mlm").exists()
    assert (out / "pretrain" / "init-mlm" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("only, rows", [
    ([], ["init", "init-mlm", "init-mlm-rtd"]),  # the preset's rows: the init fine-tuned directly, then each continuation
    (["mlm"], ["init-mlm"]),  # one continued row alone: the direct row is not run again
    (["none", "mlm"], ["init", "init-mlm"]),  # `none` names the init fine-tuned directly
])
def test_variants_with_init_select_the_rows_named(only, rows):
    budget = load_config(Budget, read_preset("minilm", "reproduce"))
    assert [v.slug for v in variants_of(budget, "minilm", only)] == rows
