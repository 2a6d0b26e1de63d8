"""Speed of code-to-doc beam search: batched with a key/value cache against the plain one-source search.

On the first test functions of a corpus, with a fine-tuned code2nl folder, times
  plain     `plain_beam_search`: one source at a time, every prefix re-decoded in full at each step
            (the rule written plainly; what `codebert code2nl generate` did before the cache)
  batched   `generate`: sources batched, the decoder run on the newest token with cached keys/values
in the same process, prints functions/s of both and their ratio, and checks that both give the
same documents (the count of differing ones is printed; the tests require 0 on tiny models).

    python benchmarks/code2nl_generation.py runs/repro-small/code2nl/mlm/best --data ../shared/data/csn6 \
        [--functions 20] [--beam 10] [--batch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from codebert.code2nl.data import read_csn, wrap
from codebert.code2nl.decoding import generate, plain_beam_search
from codebert.code2nl.model import load_seq2seq
from codebert.inputs import encode_texts
from codebert.tables import format_table
from codebert.backbone import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="fine-tuned code2nl folder (with code2nl.json)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/csn6")
    parser.add_argument("--language", nargs="*", default=[])
    parser.add_argument("--functions", type=int, default=20, help="test functions timed with both searches")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    model = load_seq2seq(opts.model).eval()
    tokenizer = load_tokenizer(opts.model)
    spec = model.spec
    pairs = read_csn(opts.data, "test", opts.language, 200)  # the first 200 per language
    rng = np.random.default_rng(0)  # a sample across languages, not the first language's first functions
    chosen = rng.choice(len(pairs.sources), size=min(opts.functions, len(pairs.sources)), replace=False)
    sources = [pairs.sources[i] for i in chosen]

    generate(model, tokenizer, sources[:2], opts.beam)  # untimed warm-up: first-call costs belong to neither
    start = time.perf_counter()
    batched = generate(model, tokenizer, sources, opts.beam, batch_size=opts.batch_size)
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    plain = []
    for encoded in encode_texts(tokenizer, sources):
        ids = torch.tensor([wrap(encoded, spec.max_source_length)])
        hyp = plain_beam_search(model, ids, torch.ones_like(ids), opts.beam, spec.max_target_length)
        plain.append(tokenizer.decode(hyp, skip_special_tokens=True).strip())
    plain_s = time.perf_counter() - start

    n = len(sources)
    rows = [["plain (one source, full re-decode)", f"{plain_s:.1f}", f"{n / plain_s:.2f}", "1.00x"],
            [f"batched ({opts.batch_size} sources) + cache", f"{batched_s:.1f}", f"{n / batched_s:.2f}", f"{plain_s / batched_s:.2f}x"]]
    print(f"{n} test functions of {opts.data}, beam {opts.beam}, max target {spec.max_target_length}, {opts.threads} thread(s)")
    print(format_table(["search", "seconds", "functions/s", "speed-up"], rows))
    print(f"documents that differ between the two: {sum(a != b for a, b in zip(plain, batched))} of {n}")


if __name__ == "__main__":
    main()
