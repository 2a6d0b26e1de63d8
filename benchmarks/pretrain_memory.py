"""Peak memory of one pre-training step on the CPU, for the `small` and `base` shapes.

Each measurement runs in a fresh process: build the model, then two optimizer steps (AdamW
states exist after the first) on a batch of 8 examples x 512 tokens with the MLM+RTD step (two
views of every pair, so 16 rows of 512; `--mlm-only` adds the 8-row MLM step). Peak resident memory
(`ru_maxrss`) of the process is reported, with the process's baseline (interpreter + libraries)
measured the same way before the model exists. Target (issue 3): base fits in 16 GB.

    python benchmarks/pretrain_memory.py [--mlm-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from codebert.tables import format_table

SHAPES = {
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, vocab=16000),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab=50265),
}


def measure(shape: str, rows: int, length: int) -> dict:
    """Runs in the child process: peak RSS in MB after two training steps."""
    import time

    import torch

    from codebert.pretrain.model import ModelConfig, new_model

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spec = dict(SHAPES[shape])
    vocab = spec.pop("vocab")
    model = new_model(ModelConfig(**spec, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, vocab, (rows, length))
    mask = torch.ones_like(ids)
    selected = torch.rand(ids.shape) < 0.15
    start = time.perf_counter()
    for _ in range(2):
        out = model(ids, mask, mlm_positions=selected, rtd=True)
        loss = torch.nn.functional.cross_entropy(out.mlm_logits, ids[selected]) + out.rtd_logits.float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {
        "baseline_mb": before,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seconds_per_step": (time.perf_counter() - start) / 2,
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in SHAPES:  # child
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description="peak memory of one pre-training step, small and base shapes")
    parser.add_argument("--mlm-only", action="store_true", help="also measure the 8-row MLM-only step")
    args = parser.parse_args()
    steps = [("MLM+RTD (8 pairs, 2 views)", 16)] + ([("MLM (8 pairs)", 8)] if args.mlm_only else [])
    rows = []
    for shape in SHAPES:
        for label, n_rows in steps:
            out = subprocess.run([sys.executable, __file__, shape, str(n_rows), "512"], capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append([shape, label, m["parameters_m"], m["peak_mb"] / 1024, m["baseline_mb"] / 1024, m["seconds_per_step"]])
    print(format_table(["shape", "step", "parameters (M)", "peak RSS (GB)", "before the model (GB)", "s/step"], rows))


if __name__ == "__main__":
    main()
