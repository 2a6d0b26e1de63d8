"""The `codebert` command: parse, validate, call `<stage>.main(cfg)`, print. No ML here.

Each stage is a `Stage`: its words on the command line, its config dataclass, its `main(cfg)`
returning a dict of figures, and a `render(figures)` for people. Flags are generated from the
config's fields (the field's text is its help), so a new option is one line in one dataclass.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys
import traceback
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Literal, get_args, get_origin

from codebert import __version__
from codebert.config import ConfigError, unwrap_optional, load_config, read_preset
from codebert.errors import UserError
from codebert.tables import json_line

log = logging.getLogger("codebert")


@dataclass(frozen=True)
class Stage:
    words: tuple[str, ...]  # e.g. ("corpus", "extract")
    module: str  # module holding the config class, main() and render()
    config: str  # name of the config dataclass in that module
    summary: str  # one line for `codebert --help`
    preset_section: str | None = None  # section of a YAML preset this stage reads (None: whole file)
    main: str = "main"
    render: str | None = "render"


STAGES = [
    Stage(("corpus", "extract"), "codebert.corpus.build", "ExtractConfig", "extract functions and docs from source trees into a CodeSearchNet-format corpus", "corpus"),
    Stage(("corpus", "stats"), "codebert.corpus.stats", "StatsConfig", "count records, repositories and token lengths of a corpus"),
    Stage(("tokenizer", "train"), "codebert.pretrain.tokenizer", "TrainTokenizerConfig", "train a byte-level BPE tokenizer on NL and code", "tokenizer"),
    Stage(("generators", "fit"), "codebert.pretrain.generators", "FitGeneratorsConfig", "learn the NL and code n-gram generators for replaced-token detection", "generators", main="fit_main", render="fit_render"),
    Stage(("pretrain",), "codebert.pretrain.stage", "PretrainConfig", "pre-train with MLM, RTD or MLM+RTD (resumable, torchrun for several processes)", "pretrain"),
    Stage(("search", "finetune"), "codebert.search.finetune", "SearchFinetuneConfig", "fine-tune for code search: the paper's cross-encoder or a bi-encoder", "search"),
    Stage(("search", "evaluate"), "codebert.search.evaluate", "SearchEvaluateConfig", "MRR over 1,000-candidate groups (the paper's protocol), full-split ranking for bi-encoders"),
    Stage(("search", "hybrid"), "codebert.search.hybrid", "SearchHybridConfig", "choose on valid how a bi-encoder's scores and BM25's are fused (dense, BM25, RRF, weighted sums; whole and short queries)"),
    Stage(("search", "baseline"), "codebert.search.baselines", "SearchBaselineConfig", "train and evaluate a Table-2 baseline: BM25, NBoW, 1D-CNN, BiRNN, self-attention", "baseline"),
    Stage(("search", "table"), "codebert.search.table", "SearchTableConfig", "the Table-2-shaped MRR table from results files"),
    Stage(("probe", "build"), "codebert.probe", "ProbeBuildConfig", "build the NL-PL probing items (max/min/less/greater) from valid and test", main="build_main", render="build_render"),
    Stage(("probe", "run"), "codebert.probe", "ProbeRunConfig", "zero-shot probing accuracy of a checkpoint's MLM head (also CodeXGLUE cloze files)", main="run_main", render="run_render"),
    Stage(("code2nl", "finetune"), "codebert.code2nl.stage", "Code2nlFinetuneConfig", "fine-tune code-to-documentation generation (encoder + Transformer decoder)", "code2nl", main="finetune_main", render="finetune_render"),
    Stage(("code2nl", "generate"), "codebert.code2nl.stage", "Code2nlEvaluateConfig", "write docs for code with beam search", main="generate_main", render="evaluate_render"),
    Stage(("code2nl", "evaluate"), "codebert.code2nl.stage", "Code2nlEvaluateConfig", "generate docs and score them with smoothed BLEU-4 per language", main="evaluate_main", render="evaluate_render"),
    Stage(("code2nl", "baseline"), "codebert.experiments.ir_baseline", "Code2nlBaselineConfig", "the paper's IR row: each function given its nearest training function's summary (by a bi-encoder), scored like a model"),
    Stage(("bleu",), "codebert.bleu", "BleuConfig", "smoothed BLEU-4 of predictions against references, as the paper's evaluator computes it"),
    Stage(("index",), "codebert.tool.index", "IndexConfig", "index the functions of source trees for semantic search (FAISS + SQLite, incremental)"),
    Stage(("query",), "codebert.tool.query", "QueryConfig", "search an index in plain English", main="query_main", render="query_render"),
    Stage(("mcp",), "codebert.tool.mcp_server", "McpConfig", "serve an index to coding agents over the Model Context Protocol (stdio or HTTP)", render=None),
    Stage(("serve",), "codebert.tool.serve", "ServeConfig", "serve an index: HTTP API (OpenAPI) and a search page, on loopback by default", render=None),
    Stage(("average",), "codebert.training.average", "AverageConfig", "average the weights of a run's last checkpoints into one model"),
    Stage(("plot",), "codebert.experiments.plot", "PlotConfig", "draw the learning curves of pre-training runs to a PNG"),
    Stage(("reproduce",), "codebert.experiments.reproduce", "ReproduceConfig", "the paper's experiments at a chosen scale, stage by stage, resumable, with one report"),
    Stage(("quickstart",), "codebert.experiments.quickstart", "QuickstartConfig", "run the whole pipeline offline on the Python standard library", "quickstart"),
]


def _add_field_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        tp, _ = unwrap_optional(hints[f.name])
        is_list = get_origin(tp) is list
        if f.default is not MISSING:
            help_text += f" (default: {f.default})"
        elif f.default_factory is not MISSING:
            help_text += f" (default: {' '.join(map(str, f.default_factory()))})"
        if get_origin(tp) is Literal:
            help_text += f" [{'|'.join(map(str, get_args(tp)))}]"
        metavar = f.metadata.get("metavar")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="+" if is_list else None, help=help_text, metavar=metavar or f.name.upper())
            continue
        flag = "--" + f.name.replace("_", "-")
        flags = (f"-{f.name}", flag) if len(f.name) == 1 else (flag,)  # -k as well as --k
        if tp is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            # A list option may be repeated (`--path a --path b`) as well as given several values at once.
            parser.add_argument(
                *flags, dest=f.name, nargs="+" if is_list else None, action="extend" if is_list else "store",
                default=argparse.SUPPRESS, help=help_text, metavar=metavar or f.name.split("_")[-1].upper(),
            )


def _selected_stage(argv: list[str]) -> tuple[str, ...] | None:
    """The stage named on the command line (its words are the first arguments), if any."""
    for stage in STAGES:
        if tuple(argv[: len(stage.words)]) == stage.words:
            return stage.words
    return None


def build_parser(selected: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The parser; only the `selected` stage gets its options (and imports its module).

    Stage modules import torch and transformers, which take seconds: `codebert --help` or
    `codebert corpus stats` should not pay for the stages they do not run.
    """
    parser = argparse.ArgumentParser(
        prog="codebert",
        description="CodeBERT (Feng et al., 2020) end to end, and natural-language code search.",
    )
    parser.add_argument("--version", action="version", version=f"codebert {__version__}")
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="stage", metavar="<stage>", title="stages")
    for stage in STAGES:
        if len(stage.words) == 1:
            sub = top.add_parser(stage.words[0], help=stage.summary, description=stage.summary)
        else:
            if stage.words[0] not in groups:
                group_parser = top.add_parser(stage.words[0], help=f"{stage.words[0]} commands")
                groups[stage.words[0]] = group_parser.add_subparsers(dest="command", metavar="<command>", title="commands")
            sub = groups[stage.words[0]].add_parser(stage.words[1], help=stage.summary, description=stage.summary)
        sub.set_defaults(_stage=stage.words)
        if stage.words != selected:
            continue
        config_cls = getattr(importlib.import_module(stage.module), stage.config)
        if stage.preset_section is not None:
            sub.add_argument("--config", dest="_config", metavar="PRESET", default=None,
                             help="YAML preset: a name (tiny, small, base) or a file; flags override it")
        if stage.render is not None:
            sub.add_argument("--json", dest="_json", action="store_true", help="print the figures as one JSON object on the last line")
        sub.add_argument("-v", "--verbose", dest="_verbose", action="store_true", help="log more")
        _add_field_arguments(sub, config_cls)
    return parser


def run(argv: list[str]) -> int:
    registry = {stage.words: stage for stage in STAGES}
    parser = build_parser(_selected_stage(argv))
    args, extras = parser.parse_known_args(argv)
    words = getattr(args, "_stage", None)
    if words is None:
        # `codebert` alone, or a group without its command (`codebert corpus`): show what there is.
        if argv and argv[0] in {s.words[0] for s in STAGES}:
            parser.parse_args([argv[0], "--help"])  # prints the group's commands and exits
        parser.print_help()
        return 0 if not argv else 2
    stage = registry[words]
    logging.basicConfig(
        level=logging.INFO if args._verbose else logging.WARNING,
        format="codebert: %(levelname)s: %(message)s",
    )
    module = importlib.import_module(stage.module)
    config_cls = getattr(module, stage.config)
    flags = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("stage", "command")}
    preset = read_preset(args._config, stage.preset_section) if getattr(args, "_config", None) else None
    problems = [f"{extra}: unknown option" for extra in extras if extra.startswith("-")]
    problems += [f"{extra}: unexpected argument" for extra in extras if not extra.startswith("-")]
    try:
        cfg = load_config(config_cls, preset, flags)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    figures = getattr(module, stage.main)(cfg)
    if stage.render is not None and figures is not None:
        print(getattr(module, stage.render)(figures), flush=True)
        if args._json:
            print(json_line(figures), flush=True)
    return 0


# SQLite's codes for a full disk, a file it may not create or open, and a failed read or write
# (extended codes such as SQLITE_IOERR_WRITE start with these). Python 3.11+ names them.
_SQLITE_ENVIRONMENT = ("SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_PERM")


def _os_error_line(exc: OSError) -> str:
    """`<path>: <strerror>` (both paths for a rename), or the strerror alone when no path is known."""
    what = exc.strerror or str(exc)
    if exc.filename is None:
        return what
    path = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{path}: {what}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
    try:
        return run(argv)
    except UserError as exc:
        print(f"codebert: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # An output path that cannot be written (no permission, read-only, /proc, a file where a
        # folder should be) or a full disk: the machine's state, not a bug, said in one line
        # (-v/--verbose keeps the traceback for debugging).
        if verbose:
            traceback.print_exc()
        print(f"codebert: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as exc:
        if not getattr(exc, "sqlite_errorname", "").startswith(_SQLITE_ENVIRONMENT):
            raise  # a wrong query is a bug in codebert: keep its traceback
        if verbose:
            traceback.print_exc()
        print(f"codebert: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        # Not a query's mistake (those are OperationalError) but a damaged file, found where a page is
        # first read: an index's meta-*.sqlite whose damage its size did not show.
        if verbose:
            traceback.print_exc()
        print(f"codebert: error: a damaged index database ({exc}); run `codebert index` on the same paths again "
              f"to rebuild it, or remove the folder", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codebert: interrupted", file=sys.stderr)
        return 130

