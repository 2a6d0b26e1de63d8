"""Pre-training throughput: our loop against a plain Hugging Face Trainer, same model and data.

Measured in one run on the same machine:
  peak        fp32 and bf16 matrix-product GFLOP/s of this CPU (1024 x 1024 products)
  ours        `codebert pretrain`'s MLM step: MLM head on masked positions only, no dropout,
              precision chosen by `--precision auto` (bf16 only where it is faster), our loop
  hf bf16     transformers.Trainer + DataCollatorForLanguageModeling, bf16=True (the issue's baseline)
  hf fp32     the same Trainer in fp32 (the fair baseline on CPUs without bf16 instructions)
Each runs the MLM objective for the same steps on the same batches of `small`-shaped pairs.
Prints tokens/s (real, non-padding tokens), the ratios, and model FLOPs utilisation (MFU) of ours
against the measured peaks (6 x non-embedding parameters per token + attention + masked-only head).

    pip install -e ".[bench]"     # transformers.Trainer needs accelerate
    python benchmarks/pretrain_throughput.py --tokenizer runs/tok16k [--data ../shared/data/csn6] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from codebert.config import load_config, read_preset
from codebert.pretrain.model import ModelConfig, new_model
from codebert.pretrain.stage import Corruptor, PretrainConfig, TorchRng, make_loss_fn
from codebert.training.batches import BucketedBatches
from codebert.pretrain.data import collate, encode_corpus
from codebert.tables import format_table
from codebert.backbone import load_tokenizer
from codebert.training.loop import LoopConfig, Trainer


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_token(cfg: ModelConfig, seq_len: int, mask_rate: float, vocab: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), our step."""
    h, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_layer = 2 * (4 * h * h + 2 * h * ffn) + 2 * 2 * seq_len * h  # projections + attention scores/values
    head = mask_rate * 2 * (h * h + h * vocab)  # MLM head on masked positions only
    return 3 * (layers * per_layer + head)


class CountingBatches:
    """Passes batches through and counts their real (non-padding) tokens."""

    def __init__(self, inner: BucketedBatches):
        self.inner, self.tokens = inner, 0

    def __next__(self):
        batch = next(self.inner)
        self.tokens += batch.num_tokens()
        return batch

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def run_ours(cfg: PretrainConfig, tokenizer, corpus, steps: int) -> tuple[float, str]:
    shape = cfg.model_shape(dropout=0.0)
    model = new_model(shape, len(tokenizer))
    loss_fn = make_loss_fn(cfg, Corruptor(cfg, tokenizer, None), TorchRng(0), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as out:
        # One untimed step first (allocations, precision probe), as the first HF step is untimed too.
        for max_steps, timed in ((1, False), (steps, True)):
            batches = CountingBatches(BucketedBatches(corpus, cfg.batch_size, cfg.max_length, seed=0, collate_fn=collate))
            batches.load_state_dict({"epoch": 0, "position": 1 if timed else 0})
            loop = LoopConfig(max_steps=max_steps, warmup_steps=1, log_every=max_steps, progress=False, precision="auto")
            trainer = Trainer(loop, model, loss_fn, batches, Path(out), save_model=lambda m, folder: None)
            start = time.perf_counter()
            trainer.fit()
            seconds = time.perf_counter() - start
    return batches.tokens / seconds, trainer.precision


def run_hf(cfg: PretrainConfig, tokenizer, corpus, steps: int, bf16: bool) -> float:
    from transformers import DataCollatorForLanguageModeling, RobertaForMaskedLM, Trainer as HFTrainer, TrainingArguments

    shape = cfg.model_shape(dropout=0.1)
    model = RobertaForMaskedLM(shape.to_roberta(len(tokenizer)))  # transformers' defaults: dropout 0.1
    # The same batches as ours, in the same order (no shuffling: group_by_length off, sequential sampler).
    batches = BucketedBatches(corpus, cfg.batch_size, cfg.max_length, seed=0, collate_fn=collate)
    examples, tokens = [], 0
    for i in range(steps + 1):
        batch = next(batches)
        for row, mask in zip(batch.input_ids, batch.attention_mask):
            examples.append({"input_ids": row[mask.bool()].tolist()})
        if i > 0:
            tokens += batch.num_tokens()
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mask_rate)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=cfg.batch_size, max_steps=steps + 1,
                                 learning_rate=cfg.learning_rate, bf16=bf16, use_cpu=True, report_to=[],
                                 logging_strategy="no", save_strategy="no", dataloader_drop_last=True,
                                 disable_tqdm=True, train_sampling_strategy="sequential")
        trainer = HFTrainer(model=model, args=args, train_dataset=examples, data_collator=collator)
        timings = []

        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                timings.append(time.perf_counter())

        trainer.add_callback(Clock())
        trainer.train()
    return tokens / (timings[-1] - timings[0])  # the first step is warm-up, as for ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--records", type=int, default=400, help="records per language and file to encode")
    parser.add_argument("--skip-hf-bf16", action="store_true", help="skip the bf16 Trainer (very slow on AVX2-only CPUs)")
    parser.add_argument("--hf-bf16-steps", type=int, default=0, help="timed steps of the bf16 Trainer (0: --steps); a rate, so fewer will do where bf16 is emulated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    tokenizer = load_tokenizer(opts.tokenizer)
    cfg = load_config(PretrainConfig, read_preset("small", "pretrain"),
                      {"data": str(opts.data), "out": "unused", "tokenizer": str(opts.tokenizer), "objective": "mlm"})
    corpus = encode_corpus(opts.data, tokenizer, "train", None, include_unimodal=False, max_records=opts.records)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    ours, precision = run_ours(cfg, tokenizer, corpus, opts.steps)
    rows.append([f"ours ({precision}, MLM head on masked only, no dropout)", ours, 1.0])
    if not opts.skip_hf_bf16:
        hf_bf16 = run_hf(cfg, tokenizer, corpus, opts.hf_bf16_steps or opts.steps, bf16=True)
        rows.append(["HF Trainer, bf16=True", hf_bf16, ours / hf_bf16])
    hf_fp32 = run_hf(cfg, tokenizer, corpus, opts.steps, bf16=False)
    rows.append(["HF Trainer, fp32", hf_fp32, ours / hf_fp32])
    shape = cfg.model_shape(dropout=0.1)
    mean_len = float(np.mean(corpus.lengths(cfg.max_length)))
    achieved = ours * flops_per_token(shape, int(mean_len), cfg.mask_rate, len(tokenizer)) / 1e9
    print(f"matmul peak on this CPU: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s; "
          f"{torch.get_num_threads()} threads")
    print(format_table(["run", "tokens/s", "ours / this"], rows))
    print(f"ours: {achieved:.1f} GFLOP/s of model FLOPs = MFU {achieved / peaks[precision]:.1%} of the {precision} peak, "
          f"{achieved / peaks['bf16']:.1%} of the bf16 peak")


if __name__ == "__main__":
    main()
