"""The GPU paths, against the CPU: run by benchmarks/gpu_run.sh on a machine with CUDA (`pytest -m cuda`),
skipped elsewhere (CI has no GPU)."""

from __future__ import annotations

import pytest
import torch

from codebert.pretrain import stage as pretrain
from codebert.training.loop import resolve_precision
from test_code2nl import check_cached_decoder, random_seq2seq
from test_pretrain import loss_parts

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_one_pretraining_step_scores_the_same_on_the_gpu(tmp_path, tokenizer_dir, generators_dir):
    # The same batch, masks and replacements (the masking RNG lives on the CPU): the paper's loss in fp32
    # on the GPU matches the CPU's to float rounding.
    figures = {}
    for device in (torch.device("cpu"), CUDA):
        cfg, batch, corruptor, model = loss_parts(tmp_path, tokenizer_dir, generators_dir)
        with torch.no_grad():
            figures[device.type] = pretrain.make_loss_fn(cfg, corruptor, pretrain.TorchRng(7), device)(model.to(device), batch)
    for name in ("loss", "mlm_loss", "rtd_loss"):
        assert float(figures["cuda"][name]) == pytest.approx(float(figures["cpu"][name]), rel=1e-4)


def test_auto_precision_is_bf16_on_the_gpu_and_pretraining_runs_in_it(tmp_path, tokenizer_dir, generators_dir):
    assert resolve_precision("auto", CUDA) == "bf16"
    cfg, *_ = loss_parts(tmp_path, tokenizer_dir, generators_dir, max_steps="6", log_every="3")
    figures = pretrain.main(cfg)
    assert figures["step"] == 6 and torch.isfinite(torch.tensor(figures["loss"]))


def test_the_cached_decoder_matches_the_full_decode_on_the_gpu(tiny_model_dir):
    check_cached_decoder(random_seq2seq(tiny_model_dir), CUDA, 1e-3)
