"""The model against plain transformers: same encoder outputs, same MLM logits, same key names."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForMaskedLM, RobertaConfig, RobertaModel

from codebert.errors import UserError
from codebert.pretrain.model import ModelConfig, load_model, new_model

TINY = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=66)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = new_model(TINY, 100).eval()
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def test_checkpoint_keys_are_robertas_and_electras(saved):
    _, folder = saved
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "roberta.embeddings.word_embeddings.weight" in keys
    assert {"lm_head.dense.weight", "lm_head.layer_norm.weight", "lm_head.bias"} <= keys
    assert {"discriminator_predictions.dense.weight", "discriminator_predictions.dense_prediction.weight"} <= keys


def test_plain_transformers_opens_it_and_computes_the_same(saved):
    model, folder = saved
    ids = torch.tensor([[0, 5, 6, 7, 2, 2, 8, 9, 10, 2, 1, 1]])
    mask = (ids != 1).long()
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, [2, 7]] = True
    with torch.no_grad():
        ours = model(ids, mask, mlm_positions=positions, rtd=True)
        hidden = model.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = AutoModel.from_pretrained(folder).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
        mlm = AutoModelForMaskedLM.from_pretrained(folder).eval()(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(plain[mask.bool()], hidden[mask.bool()], atol=1e-6)
    assert torch.allclose(mlm[positions], ours.mlm_logits, atol=1e-5)
    assert ours.rtd_logits.shape == ids.shape


def test_mlm_decoder_is_tied_to_the_embeddings(saved):
    model, _ = saved
    assert model.lm_head.decoder.weight.data_ptr() == model.roberta.embeddings.word_embeddings.weight.data_ptr()


def test_a_roberta_folder_initialises_ours_and_the_rtd_head_is_reported_new(tmp_path, caplog):
    torch.manual_seed(1)
    roberta = RobertaModel(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=66))
    roberta.save_pretrained(tmp_path / "roberta")
    ours = load_model(tmp_path / "roberta")
    assert torch.equal(ours.roberta.embeddings.word_embeddings.weight, roberta.embeddings.word_embeddings.weight)
    assert "discriminator_predictions" in caplog.text


def test_pickled_weights_are_refused(tmp_path, saved):
    _, folder = saved
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((folder / "config.json").read_text())
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="safetensors"):
        load_model(tmp_path / "bin")
    with pytest.raises(UserError, match="not a model folder"):
        load_model(tmp_path)
