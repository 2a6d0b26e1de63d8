"""`codebert reproduce`: the paper's experiments at a chosen scale, in one resumable command.

Units of work, in order (each is a call of the stage a user would run by hand, with the scale's
preset; nothing here trains or scores by itself):

  tokenizer                 byte-level BPE on the corpus (with --init: the checkpoint's tokenizer)
  generators                the NL and code n-gram generators (paper §3.4)
  pretrain/<variant>        no pre-training, code-only MLM, MLM, RTD, MLM+RTD (and, with --init, the
                            checkpoint itself and each objective continued from it)
  search/<row>              Table 2: the baselines, then each variant fine-tuned and evaluated
  probe/<variant>           Table 4: zero-shot NL-PL probing
  code2nl/<variant>         Table 5: code-to-documentation generation, smoothed BLEU-4
  unseen/<variant>          Table 6: code-to-documentation on a language not in pre-training (--unseen)
  report                    OUT/report.md (tables, curves, which of the paper's orderings held) and
                            OUT/figures.json (every figure)

A unit that finishes writes its figures to OUT/figures/<unit>.json; a re-run skips it. A unit cut
short (killed, out of time) continues from its newest checkpoint, as every training stage resumes
with `--resume auto`. Under `torchrun`, training units run on every process (DDP) and the others on
the first only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from codebert.backbone import resolve
from codebert.config import load_config, option, read_preset, resolve_preset
from codebert.corpus.jsonl import corpus_files
from codebert.io import atomic_write
from codebert.errors import UserError
from codebert.tables import duration

log = logging.getLogger(__name__)

STAGES = ["tokenizer", "generators", "pretrain", "search", "probe", "code2nl", "unseen", "report"]
# The paper's pre-training rows (Tables 2, 4-6): no pre-training, the code-only MLM baseline, and the
# objectives of pretrain/objectives.py alone and together. Any objective of that registry, or a
# '+' combination, is a variant too (`unknown_variants`): a new objective needs no change here.
BASELINE_VARIANTS = ["none", "code-only"]
OBJECTIVES = [*BASELINE_VARIANTS, "mlm", "rtd", "mlm+rtd"]


def unknown_variants(variants: list[str]) -> list[str]:
    # Imported here, not at the top: the registry imports torch, and `codebert reproduce --help`
    # stays instant without it.
    from codebert.pretrain import objectives

    unknown = []
    for variant in variants:
        if variant in BASELINE_VARIANTS:
            continue
        try:
            objectives.parse(variant)
        except ValueError:
            unknown.append(variant)
    return sorted(set(unknown))


def needs_generators(variant: str) -> bool:
    from codebert.pretrain import objectives  # as in unknown_variants: torch only when running

    return variant not in (*BASELINE_VARIANTS, "init") and objectives.needs_generators(variant)


@dataclass
class ReproduceConfig:
    data: Path = option(help="corpus folder (CodeSearchNet layout) with train, valid, test and unimodal files")
    out: Path = option(help="folder for every stage's output, report.md and figures.json")
    scale: str = option("small", "tiny (tests, minutes), small (our CPU), base (the paper, multi-GPU), or a YAML preset file")
    init: str | None = option(None, "also pre-train from this encoder (a folder of ours or of any BERT/RoBERTa-family model, "
                                     "`minilm` for the packaged all-MiniLM-L6-v2, a hub id online): the init=checkpoint rows")
    unseen: Path | None = option(None, "corpus folder of a language not in pre-training (e.g. C#) for Table 6; none: Table 6 is skipped")
    languages: list[str] = option([], "languages of --data to use (empty: all in the corpus)")
    variants: list[str] = option([], "only these pre-training variants (empty: the scale's; with --init, `none` is the init "
                                     "fine-tuned directly); e.g. to share the work between two processes or machines "
                                     "writing the same --out")
    stages: list[str] = option(STAGES, "stages to run; the others are skipped (their finished units still enter the report)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show progress bars")

    def validate(self) -> list[str]:
        problems = []
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.unseen is not None and not self.unseen.is_dir():
            problems.append(f"--unseen {self.unseen}: no such folder")
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown:
            problems.append(f"--stages: unknown {', '.join(unknown)} (stages: {', '.join(STAGES)})")
        unknown = unknown_variants(self.variants)
        if unknown:
            problems.append(f"--variants: unknown {', '.join(unknown)} (variants: {', '.join(BASELINE_VARIANTS)} or "
                            "registered objectives joined by '+', e.g. mlm+rtd)")
        if self.init is not None and Path(self.init).exists() and not (Path(self.init) / "config.json").is_file():
            problems.append(f"--init {self.init}: not a model folder (no config.json)")
        try:
            resolve_preset(self.scale)
        except UserError as exc:
            problems.append(f"--scale: {exc}")
        return problems


@dataclass
class Budget:
    """The `reproduce` section of a scale preset: what the scale can afford beyond each stage's own section."""

    variants: list[str] = option(OBJECTIVES, "pre-training variants, from: none, code-only, mlm, rtd, mlm+rtd")
    scratch: bool = option(True, "with --init, also the variants from random weights (false: only the init rows, as a CPU affords)")
    search_mode: Literal["cross", "bi"] = option("cross", "cross: the paper's classifier; bi: a bi-encoder (cheap to evaluate on a CPU)")
    search_per_language: bool = option(True, "one fine-tuned model per language (the paper) or one for all")
    search_group_size: int = option(1000, "candidates per test group (the paper: 1,000)")
    search_max_groups: int = option(0, "test groups per language (0: all)")
    search_queries_per_group: int = option(0, "queries scored per group (0: all; a cross-encoder on a CPU needs fewer)")
    cross_languages: list[str] = option([], "also the paper's cross-encoder for each variant, one model per listed language, "
                                            "with the preset's `search_cross` section (beside a bi-encoder search_mode)")
    cross_queries_per_group: int = option(0, "queries scored per test group by those cross-encoders (0: all)")
    cross_max_groups: int = option(0, "test groups per language for those cross-encoders (0: all)")
    baselines: list[str] = option(["bm25", "nbow", "cnn", "birnn", "selfatt"], "Table 2 baselines")
    hybrid: bool = option(True, "bi search_mode: also each bi-encoder row (and the zero-shot one) ranked with BM25 fused in, "
                                "the fusion chosen on valid by `codebert search hybrid` (beyond the paper)")
    probe_max_per_setting: int = option(0, "probing items per language and setting (0: all)")
    code2nl_test_records: int = option(0, "test records per language for code-to-doc generation (0: all)")

    def validate(self) -> list[str]:
        problems = [f"variants: unknown {v!r} (from {', '.join(BASELINE_VARIANTS)} or registered objectives joined by '+')"
                    for v in unknown_variants(self.variants)]
        problems += [f"baselines: unknown {b!r}" for b in self.baselines if b not in ("bm25", "nbow", "cnn", "birnn", "selfatt")]
        return problems


LABELS = {"none": "no pre-training", "code-only": "code-only MLM"}  # any other variant: its objectives in capitals


@dataclass(frozen=True)
class Variant:
    """One pre-trained starting point: a row of Tables 2, 4, 5 and 6."""

    objective: str  # one of OBJECTIVES, or "init" for the --init checkpoint as it is
    from_init: bool = False  # continue from --init instead of random weights

    @property
    def name(self) -> str:  # the row label, e.g. "MLM+RTD" or "init + MLM"
        if self.objective == "init":
            return "init"
        label = LABELS.get(self.objective, self.objective.upper())
        return f"init + {label}" if self.from_init else label

    @property
    def slug(self) -> str:  # folder and unit name, e.g. "mlm-rtd" or "init-mlm"
        if self.objective == "init":
            return "init"
        return ("init-" if self.from_init else "") + self.objective.replace("+", "-")


def variants_of(budget: Budget, init: str | None, only: list[str] | None = None) -> list[Variant]:
    """The rows to run. With `init`, the init fine-tuned directly (the paper's "RoBERTa" row) comes first,
    then each variant continued from it. `only` (--variants) selects rows; there, `none` names the init row
    too ("no continued pre-training"), so that `--variants mlm` runs the MLM row and nothing else."""
    named = only or budget.variants
    rows = [Variant(objective) for objective in named] if budget.scratch or init is None else []
    if init is not None:
        if not only or "none" in only:
            rows.append(Variant("init", from_init=True))
        rows += [Variant(objective, from_init=True) for objective in named if objective != "none"]
    return rows


# ---------------------------------------------------------------------------------------- runner
class Runner:
    """Runs units in order, skipping finished ones, timing each, and keeping their figures."""

    def __init__(self, cfg: ReproduceConfig, plan: dict[str, int]):
        self.cfg = cfg
        self.plan = plan  # units per stage, for the progress line and the time left
        self.total = sum(plan.values())
        self.seen: Counter[str] = Counter()  # units met so far per stage (the one running included)
        self.settled: Counter[str] = Counter()  # units finished, skipped or done before, per stage
        self.timed: dict[str, list[float]] = defaultdict(list)  # seconds of the units run per stage
        self.figures_dir = cfg.out / "figures"
        self.figures: dict[str, dict[str, Any]] = {}
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.started = time.perf_counter()

    def path(self, unit: str) -> Path:
        return self.figures_dir / f"{unit.replace('/', '__')}.json"

    def finished(self, unit: str) -> dict[str, Any] | None:
        path = self.path(unit)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # unreadable: run the unit again

    def run(self, unit: str, stage: str, work: Callable[[], dict[str, Any]], distributed: bool = False) -> dict[str, Any] | None:
        """Run `work` unless its figures exist or its stage is not selected; return its figures."""
        self.seen[stage] += 1
        known = self.finished(unit)
        if known is not None:
            self.figures[unit] = known
            self.settled[stage] += 1
            self.say(f"{unit}: done before, skipped")
            return known
        if stage not in self.cfg.stages:
            self.settled[stage] += 1
            self.say(f"{unit}: stage {stage} not selected, skipped")
            return None
        self.say(f"{unit}: running")
        start = time.perf_counter()
        figures: dict[str, Any] = {}
        if distributed or self.rank == 0:
            figures = work()
        self._barrier()
        seconds = time.perf_counter() - start
        figures = {**_plain(figures), "seconds": round(seconds, 1)}
        if self.rank == 0:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path(unit)) as f:
                f.write(json.dumps(figures, indent=2, default=str) + "\n")
        self.figures[unit] = figures
        self.timed[stage].append(seconds)
        self.settled[stage] += 1
        return figures

    def time_left(self) -> str:
        """Units of a stage cost alike (different variants, same work): the mean of a stage's units run
        so far times its units still to come, summed over the stages timed; the others are named."""
        left = {stage: self.plan[stage] - self.settled[stage] for stage in self.plan}
        seconds = sum(n * sum(self.timed[s]) / len(self.timed[s]) for s, n in left.items() if n > 0 and self.timed[s])
        untimed = [s for s, n in left.items() if n > 0 and not self.timed[s] and s in self.cfg.stages]
        text = f"about {duration(seconds)} left" if seconds else ""
        if untimed:
            text += ("; " if text else "") + f"not timed yet: {', '.join(untimed)}"
        return text

    def say(self, text: str) -> None:
        """One progress line: the unit's number, what happens to it, time so far and time left."""
        if self.rank != 0:
            return
        left = self.time_left()
        done = sum(self.seen.values())
        print(f"[{done}/{self.total}] {text} ({duration(time.perf_counter() - self.started)} elapsed{', ' + left if left else ''})", flush=True)

    def _barrier(self) -> None:
        if self.world > 1:
            # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
            # stay instant.
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()


def _plain(figures: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy: paths as strings, tensors as numbers."""
    out = {}
    for key, value in figures.items():
        if hasattr(value, "item") and callable(value.item):
            value = value.item()
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------- stages
def _stage_config(cls: type, scale: str, section: str | None, flags: dict[str, Any]):
    """A stage's config: the scale preset's section, then our flags (both validated as a user's would be)."""
    preset = read_preset(scale, section) if section else {}
    return load_config(cls, preset, {k: v for k, v in flags.items() if v is not None})


def main(cfg: ReproduceConfig) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from transformers.utils import logging as hf_logging

    from codebert.training.loop import setup_distributed

    hf_logging.disable_progress_bar()
    setup_distributed()  # under torchrun: join the group now, so that every unit can end on a barrier
    budget = load_config(Budget, read_preset(cfg.scale, "reproduce"))
    variants = variants_of(budget, cfg.init, cfg.variants)
    languages = cfg.languages or sorted(corpus_files(cfg.data))
    if not languages:
        raise UserError(f"--data {cfg.data}: no language folders with CodeSearchNet files")
    cfg.out.mkdir(parents=True, exist_ok=True)
    common = {"threads": cfg.threads or None, "progress": cfg.progress}
    with_generators = any(needs_generators(v.objective) for v in variants)
    zero_shot = cfg.init is not None and _is_sentence_encoder(cfg.init)
    search_units = len(variants) * (len(languages) if budget.search_per_language else 1)
    retriever = _retriever(cfg, budget, variants, cfg.out / "search", zero_shot)  # the IR row's bi-encoder
    hybrid = budget.hybrid and budget.search_mode == "bi"
    plan = {"tokenizer": 1, "generators": int(with_generators), "pretrain": len(variants),
            "search": len(budget.baselines) + int(zero_shot) + len(variants) * len(budget.cross_languages) + search_units
            + (int(zero_shot) + search_units if hybrid else 0),
            "probe": 1 + len(variants), "code2nl": len(variants) + int(retriever is not None),
            "unseen": len(variants) + int(retriever is not None) if cfg.unseen else 0}
    runner = Runner(cfg, plan)
    started = datetime.now(timezone.utc)

    # 1-2. tokenizer and generators
    tokenizer = Path(resolve(cfg.init)) if cfg.init else cfg.out / "tokenizer"
    runner.run("tokenizer", "tokenizer", lambda: _tokenizer(cfg, tokenizer))
    generators = cfg.out / "generators"
    if with_generators:
        runner.run("generators", "generators", lambda: _generators(cfg, tokenizer, generators, languages))

    # 3. pre-training
    models: dict[str, str] = {}
    for variant in variants:
        models[variant.name] = _model_path(cfg, variant)
        runner.run(f"pretrain/{variant.slug}", "pretrain",
                   lambda v=variant: _pretrain(cfg, v, tokenizer, generators, languages, common),
                   distributed=variant.objective not in ("none", "init"))

    # 4. code search (Table 2)
    search_dir = cfg.out / "search"
    for kind in budget.baselines:
        runner.run(f"search/{kind}", "search", lambda k=kind: _baseline(cfg, budget, k, tokenizer, languages, common))
    if zero_shot:  # a sentence encoder as --init: ranked as it came, before any fine-tuning
        runner.run("search/zero-shot", "search", lambda: _zero_shot(cfg, budget, languages, common))
    for variant in variants:
        groups = [[lang] for lang in languages] if budget.search_per_language else [languages]
        for langs in groups:
            name = langs[0] if len(langs) == 1 and budget.search_per_language else "all"
            runner.run(f"search/{variant.slug}/{name}", "search",
                       lambda v=variant, ls=langs, n=name: _search(cfg, budget, v, models[v.name], ls, search_dir / v.slug / n, common),
                       distributed=True)

    if hybrid:  # beyond the paper: the same models with BM25 fused in, the fusion chosen on valid
        if zero_shot:
            runner.run("search-hybrid/zero-shot", "search", lambda: _hybrid(cfg, budget, str(cfg.init), "init, zero-shot", languages,
                                                                            cfg.out / "search-hybrid" / "zero-shot", common))
        for variant in variants:
            groups = [[lang] for lang in languages] if budget.search_per_language else [languages]
            for langs in groups:
                name = langs[0] if len(langs) == 1 and budget.search_per_language else "all"
                runner.run(f"search-hybrid/{variant.slug}/{name}", "search",
                           lambda v=variant, ls=langs, n=name: _hybrid(cfg, budget, str(search_dir / v.slug / n / "best"), v.name, ls,
                                                                       cfg.out / "search-hybrid" / v.slug / n, common))

    for variant in variants:
        for lang in budget.cross_languages:
            runner.run(f"search-cross/{variant.slug}/{lang}", "search",
                       lambda v=variant, l=lang: _search_cross(cfg, budget, v, models[v.name], l, cfg.out / "search-cross" / v.slug / l, common),
                       distributed=True)

    # 5. probing (Table 4)
    probe_items = cfg.out / "probe" / "items.json"
    runner.run("probe/items", "probe", lambda: _probe_items(cfg, budget, probe_items, languages))
    for variant in variants:
        runner.run(f"probe/{variant.slug}", "probe", lambda v=variant: _probe(cfg, v, models[v.name], probe_items, common))

    # 6. code-to-documentation (Table 5) and the unseen language (Table 6)
    for variant in variants:
        runner.run(f"code2nl/{variant.slug}", "code2nl",
                   lambda v=variant: _code2nl(cfg, budget, v, models[v.name], cfg.data, languages, cfg.out / "code2nl" / v.slug, common),
                   distributed=True)
    # The paper's IR row: each function given its nearest training function's summary, by a bi-encoder.
    if retriever is not None:
        runner.run("code2nl/ir", "code2nl", lambda: _ir(retriever, cfg.data, languages, budget, cfg.out / "code2nl" / "ir", common))
    if cfg.unseen is not None:
        unseen_languages = sorted(corpus_files(cfg.unseen))
        for variant in variants:
            runner.run(f"unseen/{variant.slug}", "unseen",
                       lambda v=variant: _code2nl(cfg, budget, v, models[v.name], cfg.unseen, unseen_languages, cfg.out / "unseen" / v.slug, common),
                       distributed=True)
        if retriever is not None:
            runner.run("unseen/ir", "unseen", lambda: _ir(retriever, cfg.unseen, unseen_languages, budget, cfg.out / "unseen" / "ir", common))

    # 7. the report
    figures: dict[str, Any] = {}
    runner.say("report" if "report" in cfg.stages else "report: stage not selected, skipped")
    if runner.rank == 0 and "report" in cfg.stages:
        # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
        # stay instant.
        from codebert.experiments import report as reproduce_report

        figures = reproduce_report.write(cfg, budget, variants, languages, runner.figures, started)
    return figures


def _model_path(cfg: ReproduceConfig, variant: Variant) -> str:
    if variant.objective == "init":
        return resolve(str(cfg.init))
    return str(cfg.out / "pretrain" / variant.slug / "final")


def _tokenizer(cfg: ReproduceConfig, out: Path) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.pretrain import tokenizer as stage
    from codebert.backbone import load_tokenizer

    if cfg.init:
        tok = load_tokenizer(cfg.init)
        return {"out": str(cfg.init), "vocab_size": len(tok), "from": "init"}
    return stage.main(_stage_config(stage.TrainTokenizerConfig, cfg.scale, "tokenizer",
                                    {"data": str(cfg.data), "out": str(out), "languages": cfg.languages or None}))


def _generators(cfg: ReproduceConfig, tokenizer: Path, out: Path, languages: list[str]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.pretrain import generators as stage

    return stage.fit_main(_stage_config(stage.FitGeneratorsConfig, cfg.scale, "generators",
                                        {"data": str(cfg.data), "tokenizer": str(tokenizer), "out": str(out), "languages": languages}))


def _pretrain(cfg: ReproduceConfig, variant: Variant, tokenizer: Path, generators: Path, languages: list[str],
              common: dict[str, Any]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.pretrain import stage as pretrain

    if variant.objective == "init":
        return {"out": str(cfg.init), "step": 0}
    run = cfg.out / "pretrain" / variant.slug
    if variant.objective == "none":
        return _random_model(cfg, variant, tokenizer, run / "final")
    pretrain_objective = "mlm" if variant.objective == "code-only" else variant.objective
    flags = {
        "data": str(cfg.data), "out": str(run), "tokenizer": str(tokenizer), "languages": languages, "resume": "auto",
        "objective": pretrain_objective,
        "modality": "code" if variant.objective == "code-only" else "bimodal",
        "generators": str(generators) if needs_generators(pretrain_objective) else None,
        "init": cfg.init if variant.from_init else None, **common,
    }
    return pretrain.main(_stage_config(pretrain.PretrainConfig, cfg.scale, "pretrain", flags))


def _random_model(cfg: ReproduceConfig, variant: Variant, tokenizer: Path, out: Path) -> dict[str, Any]:
    """The 'no pre-training' row: random weights of the scale's shape, saved like any checkpoint."""
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    import torch

    from codebert.pretrain import stage as pretrain
    from codebert.pretrain.model import new_model
    from codebert.backbone import load_tokenizer

    shape = _stage_config(pretrain.PretrainConfig, cfg.scale, "pretrain",
                          {"data": str(cfg.data), "out": str(out.parent), "tokenizer": str(tokenizer), "objective": "mlm"})
    tok = load_tokenizer(tokenizer)
    torch.manual_seed(shape.seed)
    model = new_model(shape.model_shape(), len(tok))
    tmp = out.with_name(f".{out.name}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return {"out": str(out), "step": 0, "parameters": sum(p.numel() for p in model.parameters())}


def _baseline(cfg: ReproduceConfig, budget: Budget, kind: str, tokenizer: Path, languages: list[str], common: dict[str, Any]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.search import baselines

    flags = {"kind": kind, "data": str(cfg.data), "out": str(cfg.out / "search" / kind), "language": languages,
             "tokenizer": str(tokenizer) if kind != "bm25" else None, "group_size": budget.search_group_size,
             "max_groups": budget.search_max_groups, "label": _BASELINE_LABELS[kind], **common}
    return baselines.main(_stage_config(baselines.SearchBaselineConfig, cfg.scale, "baseline", flags))


_BASELINE_LABELS = {"bm25": "BM25", "nbow": "NBoW", "cnn": "1D-CNN", "birnn": "BiRNN", "selfatt": "self-attention"}


def _search(cfg: ReproduceConfig, budget: Budget, variant: Variant, model: str, languages: list[str], run: Path,
            common: dict[str, Any]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.search import evaluate, finetune

    flags = {"model": model, "data": str(cfg.data), "out": str(run), "mode": budget.search_mode, "language": languages,
             "resume": "auto", "choose_ranking": False, **common}  # the hybrid twins (_hybrid) choose the fusion themselves
    tuned = finetune.main(_stage_config(finetune.SearchFinetuneConfig, cfg.scale, "search", flags))
    if int(os.environ.get("RANK", "0")) != 0:
        return tuned
    scored = evaluate.main(_stage_config(evaluate.SearchEvaluateConfig, None, None, {
        "model": tuned["out"], "data": str(cfg.data), "language": languages, "group_size": budget.search_group_size,
        "max_groups": budget.search_max_groups, "queries_per_group": budget.search_queries_per_group,
        "full": budget.search_mode == "bi", "label": variant.name, "out": str(run / "results.json"), **common}))
    return {**{f"finetune_{k}": v for k, v in tuned.items()}, **scored, "run": str(run)}


def _hybrid(cfg: ReproduceConfig, budget: Budget, model: str, label: str, languages: list[str], out: Path,
            common: dict[str, Any]) -> dict[str, Any]:
    """A bi-encoder ranked with BM25 fused in: the fusion chosen on valid (`search hybrid`), then the test ranking."""
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.search import evaluate, hybrid

    out.mkdir(parents=True, exist_ok=True)
    chosen = hybrid.main(_stage_config(hybrid.SearchHybridConfig, None, None, {
        "model": model, "data": str(cfg.data), "language": languages, "group_size": budget.search_group_size,
        "max_groups": budget.search_max_groups, "out": str(out / "valid.json"), **common}))["chosen"]
    flags = {"ranking": chosen["ranking"], "fusion": chosen["fusion"], "lexical_weight": chosen["lexical_weight"]}
    scored = evaluate.main(_stage_config(evaluate.SearchEvaluateConfig, None, None, {
        "model": model, "data": str(cfg.data), "language": languages, "group_size": budget.search_group_size,
        "max_groups": budget.search_max_groups, "label": f"{label} + BM25 ({chosen['name']}, chosen on valid)",
        "out": str(out / "results.json"), **flags, **common}))
    return {**scored, "chosen": chosen["name"]}


def _search_cross(cfg: ReproduceConfig, budget: Budget, variant: Variant, model: str, language: str, run: Path,
                  common: dict[str, Any]) -> dict[str, Any]:
    """The paper's own search model (a pair classifier) on one language, its test protocol bounded."""
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.search import evaluate, finetune

    flags = {"model": model, "data": str(cfg.data), "out": str(run), "mode": "cross", "language": [language], "resume": "auto", **common}
    tuned = finetune.main(_stage_config(finetune.SearchFinetuneConfig, cfg.scale, "search_cross", flags))
    if int(os.environ.get("RANK", "0")) != 0:
        return tuned
    scored = evaluate.main(_stage_config(evaluate.SearchEvaluateConfig, None, None, {
        "model": tuned["out"], "data": str(cfg.data), "language": [language], "group_size": budget.search_group_size,
        "max_groups": budget.cross_max_groups, "queries_per_group": budget.cross_queries_per_group,
        "label": variant.name, "out": str(run / "results.json"), **common}))
    return {**{f"finetune_{k}": v for k, v in tuned.items()}, **scored, "run": str(run)}


def _is_sentence_encoder(init: str) -> bool:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.search.evaluate import zero_shot_spec

    return zero_shot_spec(init) is not None


def _zero_shot(cfg: ReproduceConfig, budget: Budget, languages: list[str], common: dict[str, Any]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.search import evaluate

    return evaluate.main(_stage_config(evaluate.SearchEvaluateConfig, None, None, {
        "model": str(cfg.init), "data": str(cfg.data), "language": languages, "group_size": budget.search_group_size,
        "max_groups": budget.search_max_groups, "label": "init, zero-shot (no fine-tuning)",
        "out": str(cfg.out / "search" / "zero-shot.json"), **common}))


def _probe_items(cfg: ReproduceConfig, budget: Budget, out: Path, languages: list[str]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert import probe

    return probe.build_main(_stage_config(probe.ProbeBuildConfig, None, None, {
        "data": str(cfg.data), "out": str(out), "languages": languages, "max_per_setting": budget.probe_max_per_setting}))


def _probe(cfg: ReproduceConfig, variant: Variant, model: str, items: Path, common: dict[str, Any]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert import probe

    return probe.run_main(_stage_config(probe.ProbeRunConfig, None, None, {
        "model": model, "data": str(items), "label": variant.name,
        "out": str(cfg.out / "probe" / f"{variant.slug}.json"), **common}))


def _code2nl(cfg: ReproduceConfig, budget: Budget, variant: Variant, model: str, data: Path, languages: list[str],
             run: Path, common: dict[str, Any]) -> dict[str, Any]:
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.code2nl import stage as code2nl

    flags = {"model": model, "data": str(data), "out": str(run), "language": languages, "resume": "auto", **common}
    tuned = code2nl.finetune_main(_stage_config(code2nl.Code2nlFinetuneConfig, cfg.scale, "code2nl", flags))
    if int(os.environ.get("RANK", "0")) != 0:
        return tuned
    scored = code2nl.evaluate_main(_stage_config(code2nl.Code2nlEvaluateConfig, None, None, {
        "model": tuned["out"], "data": str(data), "out": str(run / "test"), "language": languages,
        "max_records": budget.code2nl_test_records, "label": variant.name, **common}))
    return {**{f"finetune_{k}": v for k, v in tuned.items()}, **scored, "run": str(run)}


def _retriever(cfg: ReproduceConfig, budget: Budget, variants, search_dir: Path, zero_shot: bool) -> str | None:
    """The bi-encoder of the IR row: the first variant's fine-tuned one (one model for every language),
    else a sentence encoder given as --init as it came; None where the run makes neither."""
    if budget.search_mode == "bi" and not budget.search_per_language and variants:
        return str(search_dir / variants[0].slug / "all" / "best")
    return str(cfg.init) if zero_shot else None


def _ir(retriever: str, data: Path, languages: list[str], budget: Budget, out: Path, common: dict[str, Any]) -> dict[str, Any]:
    """Table 5's (and 6's) IR row: `code2nl baseline` with the run's bi-encoder, on the rows' test records."""
    if not Path(resolve(retriever)).exists():
        raise UserError(f"the IR row's bi-encoder {retriever} is not there: run the search stage first")
    # Imported here: each unit's modules (torch, transformers) only when it runs: `reproduce --help` and option errors
    # stay instant.
    from codebert.experiments import ir_baseline

    return {**ir_baseline.main(_stage_config(ir_baseline.Code2nlBaselineConfig, None, None, {
        "model": retriever, "data": str(data), "language": languages, "out": str(out),
        "max_records": budget.code2nl_test_records, **common})), "run": str(out)}


def render(figures: dict[str, Any]) -> str:
    if not figures:
        return ""
    return f"report written to {figures['report']}\nevery figure in {figures['figures']}"
