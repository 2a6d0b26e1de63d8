"""Valid MLM and RTD accuracy of finished pre-training runs, all with the same evaluation.

For each run folder, loads `final/` and computes what `codebert pretrain` logs as valid_mlm_acc
and valid_rtd_acc (same seed, same masked and corrupted pairs for every run), plus the RTD
accuracy of always answering "original" (the share of non-replaced tokens), the floor RTD must beat.

    python benchmarks/evaluate_pretrained.py runs/small-mlm runs/small-rtd runs/small-mlm-rtd \
        --data ../shared/data/csn6 --generators runs/gen16k [--examples 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from codebert.config import load_config
from codebert.pretrain.model import load_model
from codebert.pretrain.stage import Corruptor, PretrainConfig, load_generators, make_evaluate
from codebert.pretrain.data import collate, encode_corpus
from codebert.tables import format_table
from codebert.backbone import load_tokenizer
from codebert.training.loop import STEPS_FILE


def majority_floor(cfg: PretrainConfig, corruptor: Corruptor, valid, examples: int) -> float:
    """RTD accuracy of a model that never says "replaced", on the same corrupted pairs."""
    rng = torch.Generator().manual_seed(12345)
    original = total = 0
    for start in range(0, examples, cfg.batch_size):
        batch = collate(valid, list(range(start, min(start + cfg.batch_size, examples))), cfg.max_length)
        rows = torch.ones(len(batch.input_ids), dtype=torch.bool)
        corruptor.masked(batch, rng, rows)  # keep the RNG in step with make_evaluate
        _, is_replaced, _ = corruptor.corrupted(batch, rng, rows, counted=False)
        valid_positions = batch.attention_mask.bool()
        original += int((~is_replaced & valid_positions).sum())
        total += int(valid_positions.sum())
    return original / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--generators", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=1000)
    opts = parser.parse_args()
    rows, floor = [], None
    for run in opts.runs:
        final = run / "final"
        saved = json.loads((final / "run_config.json").read_text())
        cfg = load_config(PretrainConfig, None, {
            "data": str(opts.data), "out": str(run), "tokenizer": str(final), "generators": str(opts.generators),
            "max_length": saved["max_length"], "batch_size": saved["batch_size"], "mask_rate": saved["mask_rate"],
            "valid_examples": opts.examples,
        })
        tokenizer = load_tokenizer(final)
        model = load_model(final).eval()
        corruptor = Corruptor(cfg, tokenizer, load_generators(opts.generators))
        valid = encode_corpus(opts.data, tokenizer, "valid", None, include_unimodal=False)
        with torch.no_grad():
            metrics = make_evaluate(cfg, corruptor, valid, torch.device("cpu"))(model)
        if floor is None:
            floor = majority_floor(cfg, corruptor, valid, min(opts.examples, len(valid)))
        # How far the run got (checkpoints older than STEPS_FILE lack it: their planned max_steps, marked).
        steps_file = final / STEPS_FILE
        steps = json.loads(steps_file.read_text())["step"] if steps_file.exists() else f"{saved['max_steps']} (planned)"
        rows.append([run.name, saved["objective"], steps, metrics["mlm_acc"], metrics["mlm_loss"], metrics.get("rtd_acc", 0.0)])
    print(format_table(["run", "objective", "steps", "valid MLM acc", "valid MLM loss", "valid RTD acc"], rows))
    print(f"RTD accuracy of always answering 'original' on the same pairs: {floor:.4f}")


if __name__ == "__main__":
    main()
