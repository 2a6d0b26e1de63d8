"""`codebert quickstart`: the pipeline on a corpus every machine has, the interpreter's standard library.

No argument, no network. Stage by stage: extract a corpus from the standard library (or take a
CodeSearchNet-layout corpus with `--data`), fit the NL and code n-gram generators on the backbone's
tokenizer, continue pre-training the packaged all-MiniLM-L6-v2 with MLM+RTD on the corpus for a
bounded few minutes (the paper's INIT=RoBERTa recipe on the one pre-trained encoder our machines can
install), fine-tune a bi-encoder for code search (from the backbone as it came: the start that
measured best on csn6's valid split; `--search-start pretrained` starts from the continued model),
choose on valid how its scores are fused with BM25 (`codebert search hybrid`), rank the corpus's
test split with it and with the backbone as it came (the paper's MRR protocol), index the source
tree and answer a few example queries, then write a report (OUT/report.md: each stage's figures
and wall time, the queries' answers, which start the search model used and why) and say what was
made and where. Step checkpoints (optimizer state included) are deleted once a stage has finished
unless `--keep-checkpoints`.

`--init none` keeps the from-scratch chain: a byte-level BPE tokenizer and a tiny RoBERTa-shaped
model trained from random weights (which, in minutes on a CPU, does not learn to search);
`--init DIR|HUB_ID` starts from any other BERT- or RoBERTa-family encoder.
Paths that stay: OUT/pretrain/final (opens with `AutoModelForMaskedLM`), OUT/search/best (opens
with `SentenceTransformer(folder)`), OUT/index, OUT/report.md.
"""

from __future__ import annotations

import shutil
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from codebert.pretrain import generators as generators_stage
from codebert.pretrain import tokenizer as tokenizer_stage
from codebert.backbone import PACKAGED_MINILM, load_tokenizer, resolve
from codebert.config import load_config, option, read_preset
from codebert.corpus import build
from codebert.io import atomic_write
from codebert.errors import UserError


@dataclass
class QuickstartConfig:
    out: Path = option(Path("codebert-quickstart"), "folder for everything the quickstart makes")
    source: Path | None = option(None, "source tree to learn from and to index (default: this Python's standard library)")
    data: Path | None = option(None, "a CodeSearchNet-layout corpus (e.g. ../shared/data/csn6) to learn from instead of "
                                     "extracting --source; the index is then made only if --source is given")
    init: str = option(PACKAGED_MINILM, "the encoder to continue from: `minilm` (the packaged all-MiniLM-L6-v2), a model "
                                        "folder or hub id, or `none` for a tiny model trained from scratch")
    vocab_size: int = option(8_000, "tokenizer vocabulary size (--init none only)")
    pretrain_steps: int = option(400, "pre-training steps (MLM+RTD)")
    pretrain_minutes: float = option(2.0, "stop pre-training after this many minutes, whatever the step")
    search_steps: int = option(300, "fine-tuning steps of the bi-encoder")
    search_minutes: float = option(3.0, "stop the bi-encoder's fine-tuning after this many minutes")
    search_start: Literal["auto", "init", "pretrained"] = option(
        "auto", "what the bi-encoder is fine-tuned from: init (the backbone as it came), pretrained (the MLM+RTD-continued "
                "model); auto: init where there is a backbone (it measured best on csn6 valid, docs/results.md), else pretrained")
    choose_ranking: bool = option(True, "choose on the valid split how the search model's scores are fused with BM25 "
                                        "(codebert search hybrid --save); the index ranks that way")
    keep_checkpoints: bool = option(False, "keep every step checkpoint (with optimizer state); default: only final/ and best/")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    # Questions the standard library's Python code can answer (its gcd is written in C, so not that one).
    queries: list[str] = option(["parse a date string", "read a configuration file", "remove a directory tree recursively"],
                                "example queries answered from the index at the end")
    workers: int = option(0, "extraction processes; 0 = one per core")
    progress: bool = option(True, "show progress bars")

    def validate(self) -> list[str]:
        problems = []
        if self.data is not None and not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.source is not None and not self.source.exists():
            problems.append(f"--source {self.source}: no such file or folder")
        for name in ("pretrain_steps", "search_steps", "vocab_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be >= 1")
        for name in ("pretrain_minutes", "search_minutes"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        if self.threads < 0:
            problems.append("--threads: must be >= 0")
        return problems

    @property
    def from_scratch(self) -> bool:
        return self.init.lower() == "none"


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
    source = cfg.source or (None if cfg.data else stdlib_path())
    init = None if cfg.from_scratch else resolve(cfg.init)
    steps = 8 if source is not None else 6
    if cfg.data is not None:
        print(f"[1/{steps}] corpus: {cfg.data} (CodeSearchNet layout)", flush=True)
        # Imported here: each step's modules (torch, transformers) only when it runs: `quickstart --help` and option errors
        # stay instant.
        from codebert.corpus.stats import StatsConfig
        from codebert.corpus.stats import main as stats_main

        stats = stats_main(StatsConfig(data=cfg.data))["stats"]
        corpus = {"out": str(cfg.data), "counts": {lang: {split: s["records"] for split, s in splits.items()} for lang, splits in stats.items()}}
    else:
        print(f"[1/{steps}] corpus: extracting functions and docstrings from {source}", flush=True)
        corpus_cfg = build.ExtractConfig(
            paths=[source], out=cfg.out / "corpus", languages=["python"], workers=cfg.workers, progress=cfg.progress
        )
        problems = corpus_cfg.validate()
        if problems:
            raise UserError("; ".join(problems))
        corpus = build.main(corpus_cfg)
        print(build.render(corpus), flush=True)
    data = Path(corpus["out"])
    clock.lap("corpus")

    if init is None:
        print(f"\n[2/{steps}] tokenizer: byte-level BPE with {cfg.vocab_size:,} tokens", flush=True)
        tok_cfg = tokenizer_stage.TrainTokenizerConfig(data=data, out=cfg.out / "tokenizer", vocab_size=cfg.vocab_size)
        tok = tokenizer_stage.main(tok_cfg)
        print(tokenizer_stage.render(tok), flush=True)
    else:
        print(f"\n[2/{steps}] tokenizer: the backbone's own ({cfg.init})", flush=True)
        tokenizer = load_tokenizer(init)
        tok = {"out": init, "vocab_size": len(tokenizer), "kind": type(tokenizer).__name__}
        print(f"{tok['kind']} with {tok['vocab_size']:,} tokens from {init}", flush=True)
    clock.lap("tokenizer")

    print(f"\n[3/{steps}] generators: bidirectional n-gram models of the docs and of the undocumented code", flush=True)
    gen_cfg = generators_stage.FitGeneratorsConfig(data=data, tokenizer=Path(tok["out"]), out=cfg.out / "generators")
    gen = generators_stage.fit_main(gen_cfg)
    print(generators_stage.fit_render(gen), flush=True)
    clock.lap("generators")

    what = "a tiny MLM+RTD model from scratch" if init is None else f"MLM+RTD continued from {cfg.init}"
    print(f"\n[4/{steps}] pre-training: {what}, {cfg.pretrain_steps} steps or {cfg.pretrain_minutes:g} minutes", flush=True)
    from codebert.pretrain import stage as pretrain  # imports torch: only now that it is needed

    flags = {
        "data": str(data), "out": str(cfg.out / "pretrain"), "generators": str(cfg.out / "generators"),
        "objective": "mlm+rtd", "max_steps": cfg.pretrain_steps, "max_minutes": cfg.pretrain_minutes,
        "progress": cfg.progress, "resume": "auto", "threads": cfg.threads,
    }
    flags.update({"tokenizer": tok["out"]} if init is None else {"init": init})
    preset = read_preset("quickstart", "pretrain" if init is None else "init_pretrain")
    pre = pretrain.main(load_config(pretrain.PretrainConfig, preset, flags))
    print(pretrain.render(pre), flush=True)
    clock.lap("pre-training")

    if not cfg.keep_checkpoints:
        drop_checkpoints(cfg.out / "pretrain")
    start_from, why = search_start(cfg, init, pre["out"])
    print(f"\n[5/{steps}] code search: a bi-encoder fine-tuned from {start_from} ({why}), {cfg.search_steps} steps or "
          f"{cfg.search_minutes:g} minutes", flush=True)
    # Imported here: each step's modules (torch, transformers) only when it runs: `quickstart --help` and option errors
    # stay instant.
    from codebert.search import evaluate as search_evaluate
    from codebert.search import finetune as search_finetune
    from codebert.search import hybrid as search_hybrid

    flags = {"model": start_from, "data": str(data), "out": str(cfg.out / "search"), "mode": "bi", "choose_ranking": False,
             "max_steps": cfg.search_steps, "max_minutes": cfg.search_minutes, "progress": cfg.progress, "resume": "auto",
             "threads": cfg.threads}
    preset = read_preset("quickstart", "search" if init is None else "init_search")
    bi = search_finetune.main(load_config(search_finetune.SearchFinetuneConfig, preset, flags))
    print(search_finetune.render(bi), flush=True)
    if not cfg.keep_checkpoints:
        drop_checkpoints(cfg.out / "search")
    hybrid = None
    if cfg.choose_ranking:
        valid_size = min(c.get("valid", 0) for c in corpus["counts"].values())
        if valid_size >= 2:
            hybrid = search_hybrid.main(load_config(search_hybrid.SearchHybridConfig, None, {
                "model": bi["out"], "data": str(data), "group_size": min(1000, valid_size), "save": True,
                "progress": cfg.progress, "threads": cfg.threads}))
            print(search_hybrid.render(hybrid), flush=True)
    clock.lap("code search")

    print(f"\n[6/{steps}] test MRR: the paper's protocol (groups of up to 1,000 candidates) on {data}'s test split", flush=True)
    ranked = {"fine-tuned bi-encoder": bi["out"]}
    if init is not None:
        ranked[f"{cfg.init} as it came"] = init
    test = {}
    # Groups of 1,000 as the paper, or of the smallest language's whole test split when it has fewer.
    group_size = min([1000, *(c.get("test", 0) for c in corpus["counts"].values())])
    if group_size < 2:
        print("no test split to rank (fewer than 2 test functions in a language)", flush=True)
        ranked = {}
    for label, model in ranked.items():
        flags = {"model": model, "data": str(data), "out": str(cfg.out / "test" / f"{'init' if model == init else 'search'}.json"),
                 "label": label, "progress": cfg.progress, "threads": cfg.threads, "group_size": group_size}
        try:
            test[label] = search_evaluate.main(load_config(search_evaluate.SearchEvaluateConfig, None, flags))
        except UserError as exc:  # a backbone that is no sentence encoder has no zero-shot row
            print(f"{label}: not ranked ({exc})", flush=True)
            continue
        print(f"{label}: macro MRR {test[label]['macro_mrr']:.4f}", flush=True)
    clock.lap("test MRR")

    idx, answers = None, []
    if source is not None:
        print(f"\n[7/{steps}] index: every function of {source}", flush=True)
        # Imported here: each step's modules (torch, transformers) only when it runs: `quickstart --help` and option errors
        # stay instant.
        from codebert.tool import index as index_stage
        from codebert.tool import query as query_stage

        idx = index_stage.main(index_stage.IndexConfig(paths=[source], model=bi["out"], out=cfg.out / "index",
                                                       progress=cfg.progress, threads=cfg.threads))
        print(index_stage.render(idx), flush=True)
        clock.lap("index")

        print(f"\n[8/{steps}] example queries", flush=True)
        for text in cfg.queries:
            found = query_stage.query_main(query_stage.QueryConfig(index=cfg.out / "index", text=text, k=3, snippet_lines=2))
            print(query_stage.query_render(found) + "\n", flush=True)
            answers.append({"query": text, "top": [f"{r['path']}:{r['start_line']} {r['name']}" for r in found["results"]]})
        clock.lap("example queries")
    figures = {
        "out": str(cfg.out),
        "corpus": corpus["out"],
        "corpus_counts": corpus["counts"],
        "init": cfg.init,
        "tokenizer": tok["out"],
        "generators": gen["out"],
        "model": pre["out"],
        "valid_mlm_acc": pre.get("valid_mlm_acc"),
        "valid_rtd_acc": pre.get("valid_rtd_acc"),
        "pretrain_steps": pre.get("step"),
        "search_model": bi["out"],
        "search_start": start_from,
        "search_start_why": why,
        "search_valid_mrr": bi.get("best_valid_mrr"),
        "ranking": hybrid["chosen"] if hybrid else {"name": "dense"},
        "ranking_rows": {r["name"]: r["macro"] for r in hybrid["rows"]} if hybrid else {},
        "test_macro_mrr": {label: r["macro_mrr"] for label, r in test.items()},
        "test_mrr": {label: {k: r[k] for k in r.get("languages", [])} for label, r in test.items()},
        "index": idx["out"] if idx else None,
        "indexed_functions": idx["functions"] if idx else 0,
        "queries": answers,
        "stage_seconds": {k: round(v, 1) for k, v in clock.seconds.items()},
        "seconds": round(time.perf_counter() - start, 1),
        "source": str(source) if source else None,
    }
    figures["report"] = write_report(cfg.out / "report.md", figures, gen)
    return figures


def search_start(cfg: QuickstartConfig, init: str | None, pretrained: str) -> tuple[str, str]:
    """(the folder the bi-encoder is fine-tuned from, why)."""
    if init is None or cfg.search_start == "pretrained":
        return pretrained, ("no backbone to start from (--init none)" if init is None else "--search-start pretrained")
    if cfg.search_start == "init":
        return init, "--search-start init"
    return init, ("the backbone as it came: on csn6, fine-tuned directly it measured best on valid (best valid MRR 0.897 / "
                  "0.893, two seeds) against MLM+RTD-continued first (0.890), docs/results.md")


def drop_checkpoints(run: Path) -> None:
    """Delete a finished run's step-NNNNNNNN/ checkpoints (weights and optimizer state): final/ and best/ stay."""
    for folder in run.glob("step-*"):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def write_report(path: Path, figures: dict[str, Any], generators: dict[str, Any]) -> str:
    """OUT/report.md: what each stage made, its main figures and wall time, and the queries' answers."""
    counts = figures["corpus_counts"]
    rates = generators["replaced_rate"]
    seconds = figures["stage_seconds"]
    tokenizer = "byte-level BPE" if figures["init"].lower() == "none" else f"the backbone's own ({figures['init']})"
    pretrained = "from scratch" if figures["init"].lower() == "none" else f"continued from {figures['init']}"
    lines = [
        "# codebert quickstart",
        "",
        f"Source tree: `{figures['source'] or '(none: --data only)'}`; corpus `{figures['corpus']}`; {figures['seconds']:.0f} s in all.",
        "",
        "| stage | made | figures | wall time (s) |",
        "|---|---|---|---:|",
        f"| corpus | `{figures['corpus']}` | " + ", ".join(f"{lang}: {', '.join(f'{n:,} {s}' for s, n in c.items())}" for lang, c in counts.items())
        + f" | {seconds['corpus']:.1f} |",
        f"| tokenizer | `{figures['tokenizer']}` | {tokenizer} | {seconds['tokenizer']:.1f} |",
        f"| generators | `{figures['generators']}` | replaced-token rate (what pre-training sees): NL "
        f"{rates['nl_train_leave_one_out']:.3f}, code {rates['code_unimodal_leave_one_out']:.3f} | {seconds['generators']:.1f} |",
        f"| pre-training (MLM+RTD, {pretrained}) | `{figures['model']}` | {figures['pretrain_steps']} steps; valid MLM accuracy "
        f"{figures['valid_mlm_acc']:.3f}, RTD accuracy {figures['valid_rtd_acc']:.3f} | {seconds['pre-training']:.1f} |",
        f"| bi-encoder fine-tuning, from `{figures['search_start']}` | `{figures['search_model']}` | valid MRR "
        f"{figures['search_valid_mrr']:.3f} (best validation; each language's capped valid pairs ranked as one group); ranking "
        f"chosen on valid: {figures['ranking']['name']} | {seconds['code search']:.1f} |",
    ]
    for n, (label, mrr) in enumerate(figures["test_macro_mrr"].items()):
        per_language = ", ".join(f"{lang} {v:.4f}" for lang, v in figures["test_mrr"][label].items())
        wall = f"{seconds['test MRR']:.1f}" if n == 0 else "(above)"
        lines.append(f"| test ranking: {label} | test split, groups of up to 1,000 | macro MRR **{mrr:.4f}** ({per_language}) | {wall} |")
    if figures["index"]:
        lines.append(f"| index | `{figures['index']}` | {figures['indexed_functions']:,} functions | {seconds['index']:.1f} |")
    lines += ["", f"The search model was fine-tuned from `{figures['search_start']}`: {figures['search_start_why']}."]
    if figures["ranking_rows"]:
        lines += ["", "Ranking on the valid split (macro MRR; summaries as they are / cut to 4 content words):", "",
                  "| ranking | summaries | 4 words |", "|---|---|---|"]
        lines += [f"| {name} | {m.get('0', float('nan')):.4f} | {m.get('4', float('nan')):.4f} |" for name, m in figures["ranking_rows"].items()]
        lines += ["", f"Chosen (best mean of the two among those never below dense): **{figures['ranking']['name']}**; "
                      "the index ranks that way by default (`codebert query --ranking`)."]
    if figures["queries"]:
        lines += ["", "## Example queries"]
    for answer in figures["queries"]:
        lines += ["", f"`{answer['query']}`", ""]
        lines += [f"{rank}. `{hit}`" for rank, hit in enumerate(answer["top"], 1)] or ["(no result)"]
    lines += ["", "## Next", ""]
    if figures["index"]:
        lines += [f"- search: `codebert query {figures['index']} \"your question\"`",
                  f"- the page and the API: `codebert serve {figures['index']}`, then open http://127.0.0.1:8000/"]
    lines += [f"- index your own code: `codebert index PATH --model {figures['search_model']} --out INDEX`",
              f"- learning curves: `codebert plot {Path(figures['model']).parent} {Path(figures['search_model']).parent}`",
              "- the paper's tables: `codebert reproduce --scale minilm --init minilm --data CORPUS --out DIR`"]
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def render(figures: dict[str, Any]) -> str:
    lines = [
        "",
        f"quickstart finished in {figures['seconds']:.0f} s. Made:",
        f"  corpus     {figures['corpus']}   (inspect: codebert corpus stats {figures['corpus']})",
        f"  tokenizer  {figures['tokenizer']}   (opens with transformers.AutoTokenizer.from_pretrained)",
        f"  generators {figures['generators']}",
        f"  model      {figures['model']}   (opens with transformers.AutoModelForMaskedLM.from_pretrained;"
        f" valid MLM accuracy {figures['valid_mlm_acc']:.3f}, RTD accuracy {figures['valid_rtd_acc']:.3f})",
        f"  curves     codebert plot {Path(figures['model']).parent}",
        f"  search     {figures['search_model']}   (bi-encoder, opens with SentenceTransformer(folder); valid MRR {figures['search_valid_mrr']:.3f})",
    ]
    for label, mrr in figures["test_macro_mrr"].items():
        lines.append(f"  test MRR   {mrr:.4f}   ({label}; the paper's protocol on the corpus's test split)")
    if figures["index"]:
        lines.append(f"  index      {figures['index']}   ({figures['indexed_functions']:,} functions)")
    lines += [f"  report     {figures['report']}", ""]
    if figures["index"]:
        lines += [f"Search it:  codebert query {figures['index']} \"how to parse a memory string\"",
                  f"Serve it:   codebert serve {figures['index']}   then open http://127.0.0.1:8000/"]
    else:
        lines += [f"Index your code:  codebert index PATH --model {figures['search_model']} --out INDEX"]
    return "\n".join(lines)
