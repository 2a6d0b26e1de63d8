"""`codebert quickstart`: the pipeline on a corpus every machine has, the interpreter's standard library.

No argument, no network. Stage by stage: extract a corpus from the standard library, train a
tokenizer, fit the NL and code n-gram generators, pre-train a tiny MLM+RTD model for a bounded few
minutes, fine-tune it as a bi-encoder for code search, index the same source tree with it and answer
a few example queries, then write a report (OUT/report.md: each stage's figures and wall time, the
queries' answers) and say what was made and where.
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
from codebert.corpus.jsonl import atomic_write
from codebert.errors import UserError


@dataclass
class QuickstartConfig:
    out: Path = option(Path("codebert-quickstart"), "folder for everything the quickstart makes")
    source: Path | None = option(None, "source tree to learn from (default: this Python's standard library)")
    vocab_size: int = option(8_000, "tokenizer vocabulary size")
    pretrain_steps: int = option(400, "pre-training steps of the tiny MLM+RTD model")
    pretrain_minutes: float = option(4.0, "stop pre-training after this many minutes, whatever the step")
    search_steps: int = option(300, "fine-tuning steps of the bi-encoder")
    search_minutes: float = option(2.0, "stop the bi-encoder's fine-tuning after this many minutes")
    queries: list[str] = option(["parse a date string", "read a configuration file", "compute the greatest common divisor"],
                                "example queries answered from the index at the end")
    workers: int = option(0, "extraction processes; 0 = one per core")
    progress: bool = option(True, "show progress bars")


def stdlib_path() -> Path:
    path = Path(sysconfig.get_paths()["stdlib"])
    if not path.is_dir():
        raise UserError(f"the standard library was not found at {path}; pass --source PATH")
    return path


class StageClock:
    """Wall time of each stage, for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self.last
        self.last = now


def main(cfg: QuickstartConfig) -> dict[str, Any]:
    start = time.perf_counter()
    clock = StageClock()
    source = cfg.source or stdlib_path()
    print(f"[1/7] corpus: extracting functions and docstrings from {source}", flush=True)
    corpus_cfg = build.ExtractConfig(
        paths=[source], out=cfg.out / "corpus", languages=["python"], workers=cfg.workers, progress=cfg.progress
    )
    problems = corpus_cfg.validate()
    if problems:
        raise UserError("; ".join(problems))
    corpus = build.main(corpus_cfg)
    print(build.render(corpus), flush=True)
    clock.lap("corpus")

    print(f"\n[2/7] tokenizer: byte-level BPE with {cfg.vocab_size:,} tokens", flush=True)
    tok_cfg = tokenizer_stage.TrainTokenizerConfig(data=cfg.out / "corpus", out=cfg.out / "tokenizer", vocab_size=cfg.vocab_size)
    tok = tokenizer_stage.main(tok_cfg)
    print(tokenizer_stage.render(tok), flush=True)
    clock.lap("tokenizer")

    print("\n[3/7] generators: bidirectional n-gram models of the docs and of the undocumented code", flush=True)
    gen_cfg = generators_stage.FitGeneratorsConfig(data=cfg.out / "corpus", tokenizer=cfg.out / "tokenizer", out=cfg.out / "generators")
    gen = generators_stage.fit_main(gen_cfg)
    print(generators_stage.fit_render(gen), flush=True)
    clock.lap("generators")

    print(f"\n[4/7] pre-training: a tiny MLM+RTD model, {cfg.pretrain_steps} steps or {cfg.pretrain_minutes:g} minutes", flush=True)
    from codebert import pretrain  # imports torch: only now that it is needed

    flags = {
        "data": str(cfg.out / "corpus"), "out": str(cfg.out / "pretrain"), "tokenizer": str(cfg.out / "tokenizer"),
        "generators": str(cfg.out / "generators"), "objective": "mlm+rtd", "max_steps": cfg.pretrain_steps,
        "max_minutes": cfg.pretrain_minutes, "progress": cfg.progress, "resume": "auto",
    }
    pre = pretrain.main(load_config(pretrain.PretrainConfig, read_preset("quickstart", "pretrain"), flags))
    print(pretrain.render(pre), flush=True)
    clock.lap("pre-training")

    print(f"\n[5/7] code search: the model fine-tuned as a bi-encoder, {cfg.search_steps} steps or {cfg.search_minutes:g} minutes", flush=True)
    from codebert.search import finetune as search_finetune

    flags = {"model": pre["out"], "data": str(cfg.out / "corpus"), "out": str(cfg.out / "search"), "mode": "bi",
             "max_steps": cfg.search_steps, "max_minutes": cfg.search_minutes, "progress": cfg.progress, "resume": "auto"}
    bi = search_finetune.main(load_config(search_finetune.SearchFinetuneConfig, read_preset("quickstart", "search"), flags))
    print(search_finetune.render(bi), flush=True)
    clock.lap("code search")

    print(f"\n[6/7] index: every function of {source}", flush=True)
    from codebert import index as index_stage

    idx = index_stage.main(index_stage.IndexConfig(paths=[source], model=bi["out"], out=cfg.out / "index", progress=cfg.progress))
    print(index_stage.render(idx), flush=True)
    clock.lap("index")

    print("\n[7/7] example queries", flush=True)
    answers = []
    for text in cfg.queries:
        found = index_stage.query_main(index_stage.QueryConfig(index=cfg.out / "index", text=text, k=3, snippet_lines=2))
        print(index_stage.query_render(found) + "\n", flush=True)
        answers.append({"query": text, "top": [f"{r['path']}:{r['start_line']} {r['name']}" for r in found["results"]]})
    clock.lap("example queries")
    figures = {
        "out": str(cfg.out),
        "corpus": corpus["out"],
        "corpus_counts": corpus["counts"],
        "tokenizer": tok["out"],
        "generators": gen["out"],
        "model": pre["out"],
        "valid_mlm_acc": pre.get("valid_mlm_acc"),
        "valid_rtd_acc": pre.get("valid_rtd_acc"),
        "search_model": bi["out"],
        "search_valid_mrr": bi.get("best_valid_mrr"),
        "index": idx["out"],
        "indexed_functions": idx["functions"],
        "queries": answers,
        "stage_seconds": {k: round(v, 1) for k, v in clock.seconds.items()},
        "seconds": round(time.perf_counter() - start, 1),
        "source": str(source),
    }
    figures["report"] = write_report(cfg.out / "report.md", figures, gen)
    return figures


def write_report(path: Path, figures: dict[str, Any], generators: dict[str, Any]) -> str:
    """OUT/report.md: what each stage made, its main figures and wall time, and the queries' answers."""
    counts = figures["corpus_counts"]
    rates = generators["replaced_rate"]
    lines = [
        "# codebert quickstart",
        "",
        f"Source tree: `{figures['source']}`; {figures['seconds']:.0f} s in all.",
        "",
        "| stage | made | figures | wall time (s) |",
        "|---|---|---|---:|",
        f"| corpus | `{figures['corpus']}` | " + ", ".join(f"{lang}: {', '.join(f'{n:,} {s}' for s, n in c.items())}" for lang, c in counts.items())
        + f" | {figures['stage_seconds']['corpus']:.1f} |",
        f"| tokenizer | `{figures['tokenizer']}` | byte-level BPE | {figures['stage_seconds']['tokenizer']:.1f} |",
        f"| generators | `{figures['generators']}` | replaced-token rate (what pre-training sees): NL "
        f"{rates['nl_train_leave_one_out']:.3f}, code {rates['code_unimodal_leave_one_out']:.3f} | {figures['stage_seconds']['generators']:.1f} |",
        f"| pre-training (MLM+RTD) | `{figures['model']}` | valid MLM accuracy {figures['valid_mlm_acc']:.3f}, RTD accuracy "
        f"{figures['valid_rtd_acc']:.3f} | {figures['stage_seconds']['pre-training']:.1f} |",
        f"| bi-encoder fine-tuning | `{figures['search_model']}` | valid MRR {figures['search_valid_mrr']:.3f} "
        f"(groups of up to 1,000 candidates) | {figures['stage_seconds']['code search']:.1f} |",
        f"| index | `{figures['index']}` | {figures['indexed_functions']:,} functions | {figures['stage_seconds']['index']:.1f} |",
        "",
        "## Example queries",
    ]
    for answer in figures["queries"]:
        lines += ["", f"`{answer['query']}`", ""]
        lines += [f"{rank}. `{hit}`" for rank, hit in enumerate(answer["top"], 1)] or ["(no result)"]
    lines += ["", "## Next", "", f"- search: `codebert query {figures['index']} \"your question\"`",
              f"- the page and the API: `codebert serve {figures['index']}`, then open http://127.0.0.1:8000/",
              f"- learning curves: `codebert plot {Path(figures['model']).parent}`",
              "- the paper's tables at a chosen scale: `codebert reproduce --scale tiny|small|base --data CORPUS --out DIR`"]
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


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
            f"  search     {figures['search_model']}   (bi-encoder; valid MRR {figures['search_valid_mrr']:.3f})",
            f"  index      {figures['index']}   ({figures['indexed_functions']:,} functions)",
            f"  report     {figures['report']}",
            "",
            f"Search it:  codebert query {figures['index']} \"how to parse a memory string\"",
            f"Serve it:   codebert serve {figures['index']}   then open http://127.0.0.1:8000/",
        ]
    )
