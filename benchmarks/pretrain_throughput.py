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
    # on a GPU (benchmarks/gpu_run.py): the paper's shape in bf16, peaks measured on the GPU
    python benchmarks/pretrain_throughput.py --tokenizer DIR --device cuda --shape base --skip-hf-fp32 --json out.json
"""

from __future__ import annotations

import argparse
import json
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


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 5, device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of square matrix products (CPU: 1024; a GPU needs 8192 to reach its peak)."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def run_ours(cfg: PretrainConfig, tokenizer, corpus, steps: int, device: torch.device) -> tuple[float, str]:
    shape = cfg.model_shape(dropout=0.0)
    model = new_model(shape, len(tokenizer))
    loss_fn = make_loss_fn(cfg, Corruptor(cfg, tokenizer, None), TorchRng(0), device)
    with tempfile.TemporaryDirectory() as out:
        # One untimed step first (allocations, precision probe), as the first HF step is untimed too.
        for max_steps, timed in ((1, False), (steps, True)):
            batches = CountingBatches(BucketedBatches(corpus, cfg.batch_size, cfg.max_length, seed=0, collate_fn=collate))
            batches.load_state_dict({"epoch": 0, "position": 1 if timed else 0})
            loop = LoopConfig(max_steps=max_steps, warmup_steps=1, log_every=max_steps, progress=False, precision="auto")
            trainer = Trainer(loop, model, loss_fn, batches, Path(out), save_model=lambda m, folder: None, device=device)
            start = time.perf_counter()
            trainer.fit()
            synchronize(device)
            seconds = time.perf_counter() - start
    return batches.tokens / seconds, trainer.precision


def run_hf(cfg: PretrainConfig, tokenizer, corpus, steps: int, bf16: bool, device: torch.device) -> float:
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
                                 learning_rate=cfg.learning_rate, bf16=bf16, use_cpu=device.type == "cpu", report_to=[],
                                 logging_strategy="no", save_strategy="no", dataloader_drop_last=True,
                                 disable_tqdm=True, train_sampling_strategy="sequential")
        trainer = HFTrainer(model=model, args=args, train_dataset=examples, data_collator=collator)
        timings = []

        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                synchronize(device)
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
    parser.add_argument("--shape", default="small", help="preset whose pretrain shape and batch to use: small (CPU), base (the paper's RoBERTa-base)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda where there is one)")
    parser.add_argument("--skip-hf-bf16", action="store_true", help="skip the bf16 Trainer (very slow on AVX2-only CPUs)")
    parser.add_argument("--skip-hf-fp32", action="store_true", help="skip the fp32 Trainer (the bf16 one is the baseline on a GPU)")
    parser.add_argument("--hf-bf16-steps", type=int, default=0, help="timed steps of the bf16 Trainer (0: --steps); a rate, so fewer will do where bf16 is emulated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device("cuda" if opts.device == "auto" and torch.cuda.is_available() else opts.device.replace("auto", "cpu"))
    tokenizer = load_tokenizer(opts.tokenizer)
    cfg = load_config(PretrainConfig, read_preset(opts.shape, "pretrain"),
                      {"data": str(opts.data), "out": "unused", "tokenizer": str(opts.tokenizer), "objective": "mlm",
                       "grad_accumulation": "1"})
    corpus = encode_corpus(opts.data, tokenizer, "train", None, include_unimodal=False, max_records=opts.records)
    size, repeats = (8192, 20) if device.type == "cuda" else (1024, 5)
    peaks = {"fp32": matmul_peak(torch.float32, size, repeats, device), "bf16": matmul_peak(torch.bfloat16, size, repeats, device)}
    rows = []
    ours, precision = run_ours(cfg, tokenizer, corpus, opts.steps, device)
    rows.append([f"ours ({precision}, MLM head on masked only, no dropout)", ours, 1.0])
    try:
        import accelerate  # noqa: F401  (transformers.Trainer needs it; the bench extra installs it)
        have_trainer = True
    except ImportError:
        have_trainer = False
    if not have_trainer:
        rows.append(["HF Trainer: not run (pip install accelerate)", float("nan"), float("nan")])
    if have_trainer and not opts.skip_hf_bf16:
        hf_bf16 = run_hf(cfg, tokenizer, corpus, opts.hf_bf16_steps or opts.steps, bf16=True, device=device)
        rows.append(["HF Trainer, bf16=True", hf_bf16, ours / hf_bf16])
    if have_trainer and not opts.skip_hf_fp32:
        hf_fp32 = run_hf(cfg, tokenizer, corpus, opts.steps, bf16=False, device=device)
        rows.append(["HF Trainer, fp32", hf_fp32, ours / hf_fp32])
    shape = cfg.model_shape(dropout=0.1)
    mean_len = float(np.mean(corpus.lengths(cfg.max_length)))
    achieved = ours * flops_per_token(shape, int(mean_len), cfg.mask_rate, len(tokenizer)) / 1e9
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "this CPU"
    print(f"matmul peak on {where}: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s; "
          f"{torch.get_num_threads()} threads; shape {opts.shape}, batch {cfg.batch_size}, mean length {mean_len:.0f}")
    print(format_table(["run", "tokens/s", "ours / this"], rows))
    mfu = achieved / peaks[precision]
    print(f"ours: {achieved:.1f} GFLOP/s of model FLOPs = MFU {mfu:.1%} of the {precision} peak, "
          f"{achieved / peaks['bf16']:.1%} of the bf16 peak")
    if opts.json is not None:
        opts.json.write_text(json.dumps({
            "device": where, "shape": opts.shape, "steps": opts.steps, "precision": precision, "peaks_gflops": peaks,
            "tokens_per_s": {name: value for name, value, _ in rows}, "model_gflops": achieved, "mfu": mfu,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
