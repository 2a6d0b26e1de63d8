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
    from codebert.pretrain.tokenizer import TrainTokenizerConfig, main

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    main(TrainTokenizerConfig(data=CORPUS, out=out, vocab_size=1000))
    return out


@pytest.fixture(scope="session")
def generators_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """NL and code generators fitted on the fixture corpus."""
    from codebert.pretrain.generators import FitGeneratorsConfig, fit_main

    out = tmp_path_factory.mktemp("generators") / "gen"
    fit_main(FitGeneratorsConfig(data=CORPUS, tokenizer=tokenizer_dir, out=out, rate_sample=200))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny MLM-pre-trained checkpoint (a few steps): a starting point for downstream tests."""
    from codebert.pretrain import stage as pretrain
    from codebert.config import load_config, read_preset

    out = tmp_path_factory.mktemp("pretrained") / "run"
    flags = {"data": str(CORPUS), "out": str(out), "tokenizer": str(tokenizer_dir), "objective": "mlm",
             "max_steps": "10", "progress": "false"}
    pretrain.main(load_config(pretrain.PretrainConfig, read_preset("tiny", "pretrain"), flags))
    return out / "final"


def run_killed_at_batch(monkeypatch, batch: int, run) -> None:
    """Call `run()` with the batch stream dying (as a kill would) when batch number `batch` is drawn."""
    from codebert.training.batches import BucketedBatches

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


def make_tiny_bert(out: Path, data: Path = CORPUS) -> Path:
    """A BERT-family encoder folder shaped like all-MiniLM-L6-v2, in miniature: random weights, no MLM
    head, its own uncased WordPiece vocabulary learned on `data`, and sentence-transformers' module
    files (mean pooling, normalised). What a user's BERT-family backbone looks like to every stage."""
    import json

    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from codebert.corpus.jsonl import ReadReport, iter_corpus
    from codebert.corpus.jsonl import code_text, nl_text

    texts = []
    for _, _, record in iter_corpus(data, ("train", "unimodal"), None, 0, ReadReport()):
        texts += [nl_text(record), code_text(record)]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=800, min_frequency=2, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    out.mkdir(parents=True)
    wordpiece.save_model(str(out))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))
    tokenizer = AutoTokenizer.from_pretrained(out)  # vocab.txt + this config: how BERT-family folders ship
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (out / "2_Normalize").mkdir()
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny BERT-family encoder with its own WordPiece vocabulary (see make_tiny_bert)."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")
