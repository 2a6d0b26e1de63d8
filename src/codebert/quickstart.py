"""`codebert quickstart`: the pipeline on a corpus every machine has, the interpreter's standard library.

No argument, no network. Stage by stage: extract a corpus from the standard library, train a
tokenizer, fit the NL and code n-gram generators, pre-train a tiny MLM+RTD model for a bounded few
minutes, and say what was made and where. Later stages (search, index) extend it.
"""

from __future__ import annotations

import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert import generators as generators_stage
from codebert import tokenizer as tokenizer_stage
from codebert.config import load_config, option, read_preset
from codebert.corpus import build
from codebert.errors import UserError


@dataclass
class QuickstartConfig:
    out: Path = option(Path("codebert-quickstart"), "folder for everything the quickstart makes")
    source: Path | None = option(None, "source tree to learn from (default: this Python's standard library)")
    vocab_size: int = option(8_000, "tokenizer vocabulary size")
    pretrain_steps: int = option(400, "pre-training steps of the tiny MLM+RTD model")
    pretrain_minutes: float = option(4.0, "stop pre-training after this many minutes, whatever the step")
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
    print(f"[1/4] corpus: extracting functions and docstrings from {source}", flush=True)
    corpus_cfg = build.ExtractConfig(
        paths=[source], out=cfg.out / "corpus", languages=["python"], workers=cfg.workers, progress=cfg.progress
    )
    problems = corpus_cfg.validate()
    if problems:
        raise UserError("; ".join(problems))
    corpus = build.main(corpus_cfg)
    print(build.render(corpus), flush=True)

    print(f"\n[2/4] tokenizer: byte-level BPE with {cfg.vocab_size:,} tokens", flush=True)
    tok_cfg = tokenizer_stage.TrainTokenizerConfig(data=cfg.out / "corpus", out=cfg.out / "tokenizer", vocab_size=cfg.vocab_size)
    tok = tokenizer_stage.main(tok_cfg)
    print(tokenizer_stage.render(tok), flush=True)

    print("\n[3/4] generators: bidirectional n-gram models of the docs and of the undocumented code", flush=True)
    gen_cfg = generators_stage.FitGeneratorsConfig(data=cfg.out / "corpus", tokenizer=cfg.out / "tokenizer", out=cfg.out / "generators")
    gen = generators_stage.fit_main(gen_cfg)
    print(generators_stage.fit_render(gen), flush=True)

    print(f"\n[4/4] pre-training: a tiny MLM+RTD model, {cfg.pretrain_steps} steps or {cfg.pretrain_minutes:g} minutes", flush=True)
    from codebert import pretrain  # imports torch: only now that it is needed

    flags = {
        "data": str(cfg.out / "corpus"), "out": str(cfg.out / "pretrain"), "tokenizer": str(cfg.out / "tokenizer"),
        "generators": str(cfg.out / "generators"), "objective": "mlm+rtd", "max_steps": cfg.pretrain_steps,
        "max_minutes": cfg.pretrain_minutes, "progress": cfg.progress, "resume": "auto",
    }
    pre = pretrain.main(load_config(pretrain.PretrainConfig, read_preset("quickstart", "pretrain"), flags))
    print(pretrain.render(pre), flush=True)
    return {
        "out": str(cfg.out),
        "corpus": corpus["out"],
        "corpus_counts": corpus["counts"],
        "tokenizer": tok["out"],
        "generators": gen["out"],
        "model": pre["out"],
        "valid_mlm_acc": pre.get("valid_mlm_acc"),
        "valid_rtd_acc": pre.get("valid_rtd_acc"),
        "seconds": round(time.perf_counter() - start, 1),
    }


def render(figures: dict[str, Any]) -> str:
    return "\n".join(
        [
            "",
            f"quickstart finished in {figures['seconds']:.0f} s. Made:",
            f"  corpus     {figures['corpus']}   (inspect: codebert corpus stats {figures['corpus']})",
            f"  tokenizer  {figures['tokenizer']}   (opens with transformers.AutoTokenizer.from_pretrained)",
            f"  generators {figures['generators']}",
            f"  model      {figures['model']}   (opens with transformers.AutoModelForMaskedLM.from_pretrained;"
            f" valid MLM accuracy {figures['valid_mlm_acc']:.3f}, RTD accuracy {figures['valid_rtd_acc']:.3f})",
            f"  curves     codebert plot {Path(figures['model']).parent}",
        ]
    )
