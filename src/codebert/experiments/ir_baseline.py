"""`codebert code2nl baseline`: the paper's IR row of Tables 5 and 6, with our bi-encoder.

It joins two tasks (code-to-doc's data and scoring, code search's bi-encoder), so it lives here
with the other experiments rather than inside either.

Each test function is given the summary of the training function nearest to it (the paper's IR
baseline: "retrieves the most similar code snippet in the training set and uses its summary"),
nearness being the cosine of a code-search bi-encoder's vectors (ours fine-tuned, or MiniLM as it
came). Scored as `code2nl evaluate` scores a model: smoothed BLEU-4 per language, the same
predictions.txt / references.txt / results.json, the distinct-output count beside it.

The training functions' vectors are the cost (csn6: 120,000 functions through MiniLM, hours on 2
cores); each language's are kept in --out/vectors/ once encoded, so a killed run goes on from the
languages it finished, and a second split (valid, then test) encodes none again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from codebert.code2nl.data import read_csn
from codebert.code2nl.stage import bleu_of, evaluate_render
from codebert.config import option
from codebert.io import atomic_write
from codebert.search.evaluate import BiEncoder


@dataclass
class Code2nlBaselineConfig:
    model: str = option(help="bi-encoder that finds the nearest training function (search finetune --mode bi's best/, or minilm)")
    data: Path = option(help="corpus folder (CodeSearchNet layout)")
    out: Path = option(help="folder for predictions.txt, references.txt and results.json")
    language: list[str] = option([], "languages (empty: all, each scored on its own)")
    split: str = option("test", "split to document")
    max_records: int = option(0, "document at most this many records per language (0: all)")
    max_train: int = option(0, "retrieve among at most this many training functions per language (0: all)")
    batch_size: int = option(128, "inputs per forward pass")
    label: str = option("IR (nearest training function's summary)", "row name in tables")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = [] if self.data.is_dir() else [f"--data {self.data}: no such folder"]
        if min(self.max_records, self.max_train, self.threads) < 0 or self.batch_size < 1:
            problems.append("--max-records, --max-train, --threads: >= 0; --batch-size: >= 1")
        return problems


def main(cfg: Code2nlBaselineConfig) -> dict[str, Any]:
    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    encoder = BiEncoder.open(cfg.model)
    languages = cfg.language or sorted({i.split("-")[0] for i in read_csn(cfg.data, cfg.split, [], 1).ids})
    cfg.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"model": cfg.model, "label": cfg.label, "languages": languages, "kind": "ir"}
    pred_lines, ref_lines, written, started = [], [], [], time.perf_counter()

    for lang in languages:
        train = read_csn(cfg.data, "train", [lang], cfg.max_train)
        test = read_csn(cfg.data, cfg.split, [lang], cfg.max_records)
        with tqdm(total=len(train.ids) + len(test.ids), desc=f"{lang} vectors", unit="fn", dynamic_ncols=True,
                  disable=not cfg.progress) as bar:
            train_vectors = _train_vectors(encoder, cfg, lang, train.sources, bar)
            test_vectors = encoder.vectors(test.sources, encoder.spec.max_length, cfg.batch_size, bar)
        nearest = np.concatenate([np.argmax(block @ train_vectors.T, axis=1) for block in np.array_split(test_vectors, max(1, len(test_vectors) // 512))])
        predictions = [train.targets[j][0] for j in nearest]
        figures[lang] = bleu_of(predictions, test)
        figures[f"{lang}_examples"] = len(test.ids)
        figures[f"{lang}_train"] = len(train.ids)
        written += predictions
        pred_lines += [f"{i}\t{p}\n" for i, p in zip(test.ids, predictions)]
        ref_lines += [f"{i}\t{t}\n" for i, targets in zip(test.ids, test.targets) for t in targets]
    figures["macro_bleu"] = float(np.mean([figures[lang] for lang in languages]))
    figures["distinct_predictions"], figures["predictions"] = len(set(written)), len(written)
    figures["seconds"] = time.perf_counter() - started
    for name, lines in (("predictions.txt", pred_lines), ("references.txt", ref_lines)):
        with atomic_write(cfg.out / name) as f:
            f.writelines(lines)
    with atomic_write(cfg.out / "results.json") as f:
        f.write(json.dumps(figures, indent=2) + "\n")
    return figures


def _train_vectors(encoder: BiEncoder, cfg: Code2nlBaselineConfig, lang: str, sources: list[str], bar) -> np.ndarray:
    """The training functions' vectors: read from --out/vectors/ where the same model encoded the same
    functions at the same length before, else encoded and kept there (written whole or not at all)."""
    key = {"model": str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model,
           "max_length": encoder.spec.max_length, "functions": len(sources),
           "sources_sha1": hashlib.sha1("\n".join(sources).encode("utf-8")).hexdigest()}
    vectors_path, key_path = cfg.out / "vectors" / f"{lang}.npy", cfg.out / "vectors" / f"{lang}.json"
    if vectors_path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
        bar.update(len(sources))
        return np.load(vectors_path)
    vectors = encoder.vectors(sources, encoder.spec.max_length, cfg.batch_size, bar)
    with atomic_write(vectors_path, binary=True) as f:
        np.save(f, vectors)
    with atomic_write(key_path) as f:  # after the vectors: a key never names vectors that are not there
        f.write(json.dumps(key, indent=2) + "\n")
    return vectors


def render(figures: dict[str, Any]) -> str:
    return evaluate_render(figures)
