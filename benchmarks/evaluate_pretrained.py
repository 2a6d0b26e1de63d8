"""Valid MLM and RTD figures of finished pre-training runs, all with the same evaluation.

For each run folder, loads `final/` and computes what `codebert pretrain` logs at validation (same
seed, same masked and corrupted pairs for every run): MLM accuracy and loss; RTD accuracy beside its
floor (the share of original tokens: always answering "original"), RTD AUC, and RTD loss beside
the base rate's entropy (answering the base rate everywhere).

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
from codebert.pretrain.data import encode_corpus
from codebert.tables import format_table
from codebert.backbone import load_tokenizer
from codebert.training.loop import STEPS_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--generators", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=1000)
    opts = parser.parse_args()
    rows = []
    for run in opts.runs:
        final = run / "final"
        saved = json.loads((final / "run_config.json").read_text())
        cfg = load_config(PretrainConfig, None, {
            "data": str(opts.data), "out": str(run), "tokenizer": str(final), "generators": str(opts.generators),
            "max_length": saved["max_length"], "batch_size": saved["batch_size"], "mask_rate": saved["mask_rate"],
            "valid_examples": opts.examples,
            # runs before the pair layout was an option were trained on RoBERTa's own template
            "pair_layout": saved.get("pair_layout", "tokenizer"),
        })
        tokenizer = load_tokenizer(final)
        model = load_model(final).eval()
        corruptor = Corruptor(cfg, tokenizer, load_generators(opts.generators))
        valid = encode_corpus(opts.data, tokenizer, "valid", None, include_unimodal=False)
        with torch.no_grad():
            metrics = make_evaluate(cfg, corruptor, valid, torch.device("cpu"))(model)
        # How far the run got (checkpoints older than STEPS_FILE lack it: their planned max_steps, marked).
        steps_file = final / STEPS_FILE
        steps = json.loads(steps_file.read_text())["step"] if steps_file.exists() else f"{saved['max_steps']} (planned)"
        weighting = f"{saved.get('loss_reduction', 'mean')}, rtd x{saved.get('rtd_weight', 1.0):g}"
        rows.append([run.name, saved["objective"], weighting, steps, metrics["mlm_acc"], metrics["mlm_loss"],
                     *(metrics[k] for k in ("rtd_acc", "rtd_floor", "rtd_auc", "rtd_loss", "rtd_base_loss"))])
    print(format_table(["run", "objective", "loss", "steps", "valid MLM acc", "valid MLM loss", "valid RTD acc",
                        "RTD floor", "RTD AUC", "RTD loss", "base-rate loss"], rows))


if __name__ == "__main__":
    main()
