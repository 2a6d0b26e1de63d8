"""Speed of one code-to-doc training step: the loss on the target tokens alone against decode's scores.

With the CPU recipe's model (MiniLM, its top layer training, a copying 2-layer decoder) on batches of
csn6 training pairs, times forward and backward of
  decode    `seq2seq_loss(decode(...))`: every position (padding included) scored against the whole
            vocabulary, the copy mixed into a (B, T, V) distribution (the training loss before)
  targets   `Seq2Seq.forward`: the output layer on the target tokens only, each one's probability
            read directly (the training loss now)
alternating the two on the same batches in one process, and prints seconds per step, their ratio,
and the largest difference of the two losses (the same value up to float rounding).

    python benchmarks/code2nl_step.py [--data ../shared/data/csn6] [--steps 6] [--threads 1] [--model minilm]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from codebert.backbone import load_tokenizer
from codebert.code2nl import stage as code2nl
from codebert.code2nl.data import EncodedPairs, read_csn
from codebert.code2nl.model import load_seq2seq, seq2seq_loss
from codebert.inputs import Layout, encode_texts
from codebert.tables import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="encoder to start from (the recipe's: minilm)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--steps", type=int, default=6, help="batches timed with each loss")
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    cfg = code2nl.apply_recipe(code2nl.Code2nlFinetuneConfig(model=opts.model, data=opts.data, out=Path("unused")), "cpu")
    tokenizer = load_tokenizer(opts.model)
    spec = cfg.spec(copy_exclude=tokenizer.all_special_ids)
    model = load_seq2seq(opts.model, spec)
    model.encoder.requires_grad_(False)
    model.frozen_encoder = code2nl._unfreeze_top_layers(model, cfg.encoder_train_layers, cfg.encoder_lr_scale) == 0
    model.train()
    pairs = read_csn(opts.data, "train", [], 50)
    corpus = EncodedPairs(encode_texts(tokenizer, pairs.sources), encode_texts(tokenizer, [t[0] for t in pairs.targets]))
    collate = code2nl.batches_of(Layout.of(tokenizer), spec)
    rng = np.random.default_rng(0)

    def by_decode(batch):
        memory = model.encode(batch.source_ids, batch.source_mask)
        scores = model.decode(memory, batch.source_mask, batch.target_ids, batch.source_ids)
        return seq2seq_loss(scores, batch.target_ids, batch.target_mask, log_probs=spec.copy)

    seconds: dict[str, list[float]] = {"decode": [], "targets": []}
    differences = []
    for step in range(opts.steps + 1):  # step 0: untimed warm-up
        batch = collate(corpus, rng.choice(len(corpus), cfg.batch_size, replace=False).tolist(), spec.max_source_length)
        order = [("decode", by_decode), ("targets", model)]
        losses = {}
        for name, loss_of in order if step % 2 else order[::-1]:  # alternated: neither always runs first
            torch.manual_seed(step)  # the same dropout masks for both
            start = time.perf_counter()
            loss = loss_of(batch)
            loss.backward()
            if step:
                seconds[name].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
            losses[name] = loss.detach().item()
        differences.append(abs(losses["decode"] - losses["targets"]))
    mean = {name: float(np.mean(values)) for name, values in seconds.items()}
    rows = [["seconds per step, decode's scores", f"{mean['decode']:.2f}"],
            ["seconds per step, target tokens alone", f"{mean['targets']:.2f}"],
            ["ratio (decode / targets)", f"{mean['decode'] / mean['targets']:.2f}"],
            ["largest loss difference", f"{max(differences):.2e}"]]
    print(format_table(["figure", "value"], rows))


if __name__ == "__main__":
    main()
