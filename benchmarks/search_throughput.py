"""Code-search speed: the cross-encoder's pair throughput vs the bi-encoder's query latency, same model.

Both are built on the same encoder (weights do not change speed: any pre-trained or fine-tuned
checkpoint will do). Measured in the same run, on one language's test split:
  * cross-encoder: pairs/s scoring queries against a 1,000-candidate group (the paper's protocol,
    pairs batched by length), and the time that implies for one query and for the whole protocol;
  * bi-encoder: functions/s encoding the whole split once, then per-query latency (encode the
    query, score every function of the split, take the top 10) at p50/p99;
  * the ratio of the time to rank one query over 1,000 candidates, cross / bi.

    python benchmarks/search_throughput.py --model runs/small-mlm-rtd/final --data ../shared/data/csn6 \
        [--language python] [--cross-queries 2] [--latency-queries 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from codebert.inputs import encode_texts
from codebert.tables import format_table
from codebert.search.data import evaluation_groups, load_examples
from codebert.search.scorers import CrossScorer, encode_all
from codebert.search.models import SearchSpec, load_bi_encoder, load_cross_encoder, single_inputs
from codebert.backbone import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="any checkpoint folder of our encoder")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--language", default="python")
    parser.add_argument("--cross-queries", type=int, default=2, help="queries scored against a full group of 1,000")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=200, help="cross: pair length; bi: code length")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    tokenizer = load_tokenizer(args.model)
    examples = load_examples(args.data, "test", [args.language])
    group = evaluation_groups(len(examples), 1000)[0]

    spec = SearchSpec(mode="cross", max_length=args.max_length, pair_layout="codebert", nl_length=50)  # a new cross-encoder's layout
    cross = CrossScorer(load_cross_encoder(args.model).eval(), tokenizer, examples, spec, args.batch_size, device)
    cross.score(group[:1], group[:64])  # warm-up
    cross.pairs_scored, cross.seconds = 0, 0.0
    cross.score(group[: args.cross_queries], group)
    pairs_per_s = cross.pairs_scored / cross.seconds
    cross_query_s = 1000 / pairs_per_s

    bi = load_bi_encoder(args.model).eval()
    code_ids = encode_texts(tokenizer, examples.codes)
    started = time.perf_counter()
    code_vectors = encode_all(bi, code_ids, args.max_length, args.batch_size, device)
    encode_s = time.perf_counter() - started
    latencies = []
    with torch.inference_mode():
        for i in range(args.latency_queries + 5):
            query = examples.queries[i % len(examples)]
            start = time.perf_counter()
            ids, mask = single_inputs(encode_texts(tokenizer, [query]), 64)
            scores = code_vectors @ bi(ids, mask)[0]
            torch.topk(scores, 10)
            if i >= 5:  # the first few warm the allocator up
                latencies.append(time.perf_counter() - start)
    p50, p99 = np.percentile(latencies, [50, 99])

    rows = [
        ["cross-encoder pairs/s (1,000-candidate group)", pairs_per_s],
        ["cross-encoder seconds per query (1,000 pairs)", cross_query_s],
        ["cross-encoder hours for one language's protocol (1,000 x 1,000 per group)", 1_000_000 * (len(examples) // 1000) / pairs_per_s / 3600],
        ["bi-encoder functions/s (encoding the split once)", len(examples) / encode_s],
        [f"bi-encoder query latency p50, ms (ranking all {len(examples)} functions)", 1000 * p50],
        ["bi-encoder query latency p99, ms", 1000 * p99],
        ["ratio: cross seconds per query / bi p50", cross_query_s / p50],
    ]
    print(f"model {args.model}, {args.language} test ({len(examples)} functions), threads {torch.get_num_threads()}")
    print(format_table(["figure", "value"], rows))


if __name__ == "__main__":
    main()
