"""How much of a sentence encoder's search ability a checkpoint keeps, before any fine-tuning.

For each model folder: the MRR of its mean-pooled, normalised vectors (docs as queries, bf16
autocast) over one group of the first --group functions of a csn6 valid split -- each doc ranked
against all the group's functions, ties against. A proxy for what continued pre-training does to
an encoder like all-MiniLM-L6-v2 (docs/results.md), not one of the paper's metrics.

    python benchmarks/embedding_proxy.py MODEL [MODEL ...] [--data ../shared/data/csn6] [--language python] [--group 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


def embed(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), 64):
        batch = tokenizer(texts[i : i + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--language", default="python")
    parser.add_argument("--group", type=int, default=1000)
    args = parser.parse_args()
    with gzip.open(args.data / args.language / "valid.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f][: args.group]
    for path in args.models:
        from codebert.backbone import resolve

        folder = resolve(path)
        tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
        queries = embed(model, tokenizer, [" ".join(r["docstring_tokens"]) for r in records], 32)
        codes = embed(model, tokenizer, [r["code"] for r in records], 256)
        scores = queries @ codes.T
        ranks = (scores >= scores.diag().unsqueeze(1)).sum(1)  # ties against: the paper's rule
        print(f"{path}\tMRR {float((1.0 / ranks).mean()):.4f}", flush=True)


if __name__ == "__main__":
    main()
