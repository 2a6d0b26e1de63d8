"""Does a checkpoint tell `max` from `min` at all, or only lean to one of them? (PL probing items)

    python benchmarks/probe_margin.py runs/repro-small/probe/items.json CHECKPOINT [CHECKPOINT ...] [--threads 1]

For each checkpoint and each two-candidate setting (pl, pl_preceding) it prints:
  accuracy       the probe's own figure (the candidate with the higher log-probability wins)
  picks max      the share of items where it picks `max` (the items hold 47.5% `max` answers on csn6):
                 far from that share means the accuracy is mostly a prior for one word
  AUC            the probability that a `max` item gets a larger margin log p(max) - log p(min) than a
                 `min` item (ties count half): 0.5 is no discrimination whatever the prior, 1.0 perfect
  hidden acc     the accuracy on the items where neither word is visible elsewhere in the given code
                 (the answer can come only from the documentation and what the code does)
The probe's scoring is reused (codebert.probe.MaskScorer), so the figures match `codebert probe run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from codebert.pretrain.model import load_model
from codebert.errors import UserError
from codebert.probe import PL_CLASSES, MaskScorer, ProbeRunConfig, load_items
from codebert.backbone import load_tokenizer

SETTINGS = ("pl", "pl_preceding")


def auc(margins: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of `margins` for the positive items against the others (ties count half)."""
    pos, neg = margins[positive], margins[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def margins_of(scorer: MaskScorer, items: list[dict], batch_size: int = 32) -> np.ndarray:
    """log p(max) - log p(min) at the mask of each item (both are one BPE piece after a space)."""
    (max_id,), (min_id,) = scorer.pieces("max"), scorer.pieces("min")
    out = []
    for start in range(0, len(items), batch_size):
        lp = scorer.log_probs(items[start : start + batch_size], 1)[:, 0]
        out.append((lp[:, max_id] - lp[:, min_id]).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", type=Path, help="items from `codebert probe build`")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    print("| checkpoint | setting | items | accuracy | picks max | AUC | hidden items | hidden acc |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for checkpoint in args.checkpoints:
        cfg = ProbeRunConfig(model=checkpoint, data=args.items)
        if problems := cfg.validate():
            sys.exit(f"probe_margin: error: {'; '.join(problems)}")
        try:
            items = load_items(cfg)
            scorer = MaskScorer(load_model(checkpoint).eval(), load_tokenizer(checkpoint), "pair", 512, torch.device("cpu"))
        except UserError as exc:
            sys.exit(f"probe_margin: error: {exc}")
        for setting in SETTINGS:
            chosen = [item for item in items if item["setting"] == setting]
            if not chosen:
                continue
            margins = margins_of(scorer, chosen)
            is_max = np.array([item["answer_class"] == "max" for item in chosen])
            picks_max = margins >= 0  # a tie picks `max`, the first candidate, as the probe does
            correct = picks_max == is_max
            hidden = np.array([not set(PL_CLASSES) & set(item["pl_tokens"]) for item in chosen])
            print(f"| {checkpoint} | {setting} | {len(chosen)} | {100 * correct.mean():.2f}% | {100 * picks_max.mean():.1f}% "
                  f"| {auc(margins, is_max):.4f} | {hidden.sum()} | {100 * correct[hidden].mean():.2f}% |")


if __name__ == "__main__":
    main()
