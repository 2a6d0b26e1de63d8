"""`codebert quickstart`: the pipeline on a corpus every machine has, the interpreter's standard library.

No argument, no network. Stage by stage: extract a corpus from the standard library, train a
tokenizer on it, and say what was made and where. Later stages (pre-training, search) extend it.
"""

from __future__ import annotations

import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert import tokenizer as tokenizer_stage
from codebert.config import option
from codebert.corpus import build
from codebert.errors import UserError


@dataclass
class QuickstartConfig:
    out: Path = option(Path("codebert-quickstart"), "folder for everything the quickstart makes")
    source: Path | None = option(None, "source tree to learn from (default: this Python's standard library)")
    vocab_size: int = option(8_000, "tokenizer vocabulary size")
    workers: int = option(0, "extraction processes; 0 = one per core")
    progress: bool = option(True, "show progress bars")


def stdlib_path() -> Path:
    path = Path(sysconfig.get_paths()["stdlib"])
    if not path.is_dir():
        raise UserError(f"the standard library was not found at {path}; pass --source PATH")
    return path


def main(cfg: QuickstartConfig) -> dict[str, Any]:
    start = time.perf_counter()
    source = cfg.source or stdlib_path()
    print(f"[1/2] corpus: extracting functions and docstrings from {source}", flush=True)
    corpus_cfg = build.ExtractConfig(
        paths=[source], out=cfg.out / "corpus", languages=["python"], workers=cfg.workers, progress=cfg.progress
    )
    problems = corpus_cfg.validate()
    if problems:
        raise UserError("; ".join(problems))
    corpus = build.main(corpus_cfg)
    print(build.render(corpus), flush=True)

    print(f"\n[2/2] tokenizer: byte-level BPE with {cfg.vocab_size:,} tokens", flush=True)
    tok_cfg = tokenizer_stage.TrainTokenizerConfig(data=cfg.out / "corpus", out=cfg.out / "tokenizer", vocab_size=cfg.vocab_size)
    tok = tokenizer_stage.main(tok_cfg)
    print(tokenizer_stage.render(tok), flush=True)
    return {
        "out": str(cfg.out),
        "corpus": corpus["out"],
        "corpus_counts": corpus["counts"],
        "tokenizer": tok["out"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def render(figures: dict[str, Any]) -> str:
    return "\n".join(
        [
            "",
            f"quickstart finished in {figures['seconds']:.0f} s. Made:",
            f"  corpus     {figures['corpus']}   (inspect: codebert corpus stats {figures['corpus']})",
            f"  tokenizer  {figures['tokenizer']}   (opens with transformers.AutoTokenizer.from_pretrained)",
        ]
    )
