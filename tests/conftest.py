"""Shared fixtures: the hand-written sample tree and a tiny corpus built from it once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory) -> Path:
    """A copy of the six-language sample tree (tests may add broken files to their own copies)."""
    root = tmp_path_factory.mktemp("tree") / "samples"
    shutil.copytree(SAMPLES, root)
    return root


CORPUS = FIXTURES / "corpus"  # 300/60/60/300 real stdlib functions (see its README)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A 1,000-token BPE tokenizer trained on the fixture corpus."""
    from codebert.tokenizer import TrainTokenizerConfig, main

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    main(TrainTokenizerConfig(data=CORPUS, out=out, vocab_size=1000))
    return out


@pytest.fixture(scope="session")
def generators_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """NL and code generators fitted on the fixture corpus."""
    from codebert.generators import FitGeneratorsConfig, fit_main

    out = tmp_path_factory.mktemp("generators") / "gen"
    fit_main(FitGeneratorsConfig(data=CORPUS, tokenizer=tokenizer_dir, out=out, rate_sample=200))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny MLM-pre-trained checkpoint (a few steps): a starting point for downstream tests."""
    from codebert import pretrain
    from codebert.config import load_config, read_preset

    out = tmp_path_factory.mktemp("pretrained") / "run"
    flags = {"data": str(CORPUS), "out": str(out), "tokenizer": str(tokenizer_dir), "objective": "mlm",
             "max_steps": "10", "progress": "false"}
    pretrain.main(load_config(pretrain.PretrainConfig, read_preset("tiny", "pretrain"), flags))
    return out / "final"


def run_killed_at_batch(monkeypatch, batch: int, run) -> None:
    """Call `run()` with the batch stream dying (as a kill would) when batch number `batch` is drawn."""
    from codebert.pretrain_data import BucketedBatches

    real_next = BucketedBatches.__next__
    calls = {"n": 0}

    def dies(self):
        calls["n"] += 1
        if calls["n"] == batch:
            raise KeyboardInterrupt
        return real_next(self)

    monkeypatch.setattr(BucketedBatches, "__next__", dies)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(BucketedBatches, "__next__", real_next)
