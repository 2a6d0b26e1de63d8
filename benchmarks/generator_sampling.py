"""Cost of generator sampling against a whole training step (target: at most 5%).

On real `small` batches of csn6 (bimodal pairs and unimodal code), times
  sampling   Corruptor.corrupted: position selection, contexts, NL and code generator samples
  step       the whole MLM+RTD training step (both views, forward, backward, AdamW)
in the same process, and prints both and their ratio; also the generators' load time and size.

    python benchmarks/generator_sampling.py --tokenizer runs/tok16k --generators runs/gen16k [--data ../shared/data/csn6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from codebert.pretrain import objectives

from codebert.config import load_config, read_preset
from codebert.pretrain.model import new_model
from codebert.pretrain.stage import Corruptor, PretrainConfig, TorchRng, load_generators, make_loss_fn
from codebert.training.batches import BucketedBatches
from codebert.pretrain.data import collate, encode_corpus
from codebert.tables import format_table
from codebert.backbone import load_tokenizer
from codebert.training.loop import LoopConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--generators", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--records", type=int, default=500)
    opts = parser.parse_args()
    tokenizer = load_tokenizer(opts.tokenizer)
    start = time.perf_counter()
    generators = load_generators(opts.generators)
    load_s = time.perf_counter() - start
    cfg = load_config(PretrainConfig, read_preset("small", "pretrain"),
                      {"data": str(opts.data), "out": "unused", "tokenizer": str(opts.tokenizer), "generators": str(opts.generators)})
    corpus = encode_corpus(opts.data, tokenizer, "train", None, include_unimodal=True, max_records=opts.records)
    corruptor = Corruptor(cfg, tokenizer, generators)

    batches = BucketedBatches(corpus, cfg.batch_size, cfg.max_length, seed=0, collate_fn=collate)
    rng = torch.Generator().manual_seed(0)
    sample_s = 0.0
    for _ in range(opts.steps):
        batch = next(batches)
        t = time.perf_counter()
        selected = objectives.select_positions(batch.segments, cfg.mask_rate, rng)  # the step draws it once, for both views
        corruptor.corrupted(batch, selected, rng)
        sample_s += time.perf_counter() - t
    sample_s /= opts.steps

    shape = cfg.model_shape(dropout=0.0)
    model = new_model(shape, len(tokenizer))
    loss_fn = make_loss_fn(cfg, corruptor, TorchRng(0), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as out:
        for steps, timed in ((1, False), (opts.steps, True)):  # one untimed warm-up step
            loop = LoopConfig(max_steps=steps, warmup_steps=1, log_every=steps, progress=False, precision="auto")
            trainer = Trainer(loop, model, loss_fn, BucketedBatches(corpus, cfg.batch_size, cfg.max_length, seed=0, collate_fn=collate), Path(out),
                              save_model=lambda m, folder: None)
            t = time.perf_counter()
            trainer.fit()
            step_s = (time.perf_counter() - t) / steps
    size_mb = sum(g.size_bytes() for g in generators.values()) / 1e6
    print(f"generators: {size_mb:.0f} MB, loaded in {load_s:.1f} s")
    print(format_table(["per batch of 32", "milliseconds"], [["generator sampling", sample_s * 1e3], ["whole MLM+RTD step", step_s * 1e3]]))
    print(f"sampling / step: {sample_s / step_s:.1%} (target <= 5%)")


if __name__ == "__main__":
    main()
