"""Every script in benchmarks/ still imports and parses its options: they use the package's
internals, and nothing else would notice when a module they import moves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


def test_there_are_benchmarks_to_check():
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_each_benchmark_imports_and_answers_help(script, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)  # its module-level imports of codebert.* resolve
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as done:
        module.main()
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_the_gpu_run_rehearses_on_the_cpu(tmp_path):
    """benchmarks/gpu_run.sh --dry-run: the whole plan of the GPU run (CUDA tests, throughput, every heavy
    unit, probing, the summary) at tiny sizes on the CPU, so that a lent GPU's minutes are not spent on a
    broken command."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["bash", str(root / "benchmarks/gpu_run.sh"), "--dry-run", "--out", str(tmp_path / "out")],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    units = figures["units"]
    assert figures["failed"] == [] and figures["plan"]["dry_run"]
    assert {"cuda_tests", "throughput", "mlm", "gens", "mlm+rtd", "code2nl", "code2nl-test", "cross", "cross-test",
            "probe-mlm", "probe-mlm+rtd"} <= set(units)
    assert units["mlm+rtd"]["step"] == 2 and "valid_rtd_auc" in units["mlm+rtd"]
    assert "python_shuffle_gain" in units["code2nl-test"] and "macro_mrr" in units["cross-test"]
    assert json.loads((tmp_path / "out" / "throughput.json").read_text())["tokens_per_s"]
    assert {p.name for p in (tmp_path / "out").iterdir()} <= {"env.json", "cuda_tests.log", "throughput.json", "figures.json",
                                                              "summary.md", "logs.tar.gz"}  # the device brings back 8 files
