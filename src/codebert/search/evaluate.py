"""`codebert search evaluate`: MRR over 1,000-candidate groups, the paper's protocol exactly.

Per language (CodeBERT's process_data.py + mrr.py): the test split, in file order, is shuffled
with `np.random.seed(0)`, cut into groups of 1,000 (a last, smaller group is dropped); every query
of a group is scored against all 1,000 codes of its group (its own and 999 distractors); its rank
is the number of candidates scoring >= its own code (ties count against the model); MRR is the
mean of 1/rank; the table reports each language and the macro-average over languages.

Scorers: a cross-encoder scores every (query, code) pair: 1,000,000 forward passes per group,
batched by length; a bi-encoder or a baseline embeds each query and code once and scores by dot
product, which also allows ranking each query against the whole split (`--full`), optionally
re-ranking the top k with a cross-encoder (`--rerank`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from codebert.backbone import resolve
from codebert.inputs import Layout
from codebert.config import option
from codebert import model_card
from codebert.errors import UserError
from codebert.inputs import encode_texts
from codebert.search.data import GROUP_SIZE, languages_of, load_examples, short_queries
from codebert.search.lexical import FtsScorer
from codebert.search.fusion import Fusion, FusedScorer
from codebert.search.scorers import CrossScorer, VectorScorer, encode_all, full_ranking_mrr, group_mrr, groups_for
from codebert.search.table import render_results, write_results
from codebert.search.models import SearchSpec, load_bi_encoder, load_cross_encoder
from codebert.backbone import load_tokenizer
from codebert.search.models import pooling_of

log = logging.getLogger(__name__)


@dataclass
class SearchEvaluateConfig:
    model: str = option(help="fine-tuned search model folder (cross or bi, as its search_model.json says)")
    data: Path = option(help="corpus folder (CodeSearchNet layout)")
    language: list[str] = option([], "languages to evaluate (empty: all in the corpus); the table adds their macro-average")
    split: str = option("test", "split to rank (the paper: test)")
    group_size: int = option(GROUP_SIZE, "candidates per group (the paper: 1,000)")
    max_groups: int = option(0, "evaluate only the first N groups per language (0: all)")
    queries_per_group: int = option(0, "score only the first N queries of each group against all its candidates (0: all; for CPU-bound cross-encoders)")
    batch_size: int = option(256, "inputs per forward pass")
    full: bool = option(False, "bi-encoder: also rank each query against every function of the split")
    rerank: str | None = option(None, "cross-encoder folder that re-ranks the bi-encoder's top --rerank-k in --full ranking")
    rerank_k: int = option(10, "candidates re-ranked by --rerank")
    ranking: Literal["dense", "lexical", "hybrid"] = option(
        "dense", "bi-encoder: rank by its vectors (dense), by BM25 over identifiers split into sub-words (lexical: SQLite FTS5's, "
        "the search tool's; search/lexical.py), or by both fused (hybrid, search/fusion.py)")
    fusion: Fusion = option("sum", "hybrid: sum (min-max normalised scores, --lexical-weight) or rrf (reciprocal ranks, k = 60)")
    lexical_weight: float = option(0.3, "hybrid sum: the BM25 share of the fused score, in [0, 1]")
    query_words: int = option(0, "cut each query to this many content words (search/data.py short_queries: short natural queries; 0: whole summaries)")
    lexical_form: Literal["stems", "words"] = option(
        "stems", "lexical and hybrid: BM25's words as the tool writes them (stems) or the sub-words as they are (words: before 2026-12-08)")
    out: Path | None = option(None, "also write the figures as JSON to this file (for `codebert search table`)")
    label: str = option("", "row name in the table (default: the model folder)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = []
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.group_size < 2:
            problems.append("--group-size: must be >= 2")
        for name in ("max_groups", "queries_per_group", "threads", "query_words"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        if self.batch_size < 1 or self.rerank_k < 1:
            problems.append("--batch-size and --rerank-k: must be >= 1")
        if not 0 <= self.lexical_weight <= 1:
            problems.append("--lexical-weight: must be in [0, 1]")
        return problems


def zero_shot_spec(model: str) -> SearchSpec | None:
    """A sentence-transformers folder (or `minilm`) without our search_model.json: evaluated as it is,
    as a bi-encoder with its own pooling (the "zero-shot" rows), at our bi-encoder's default lengths."""

    folder = Path(resolve(model))
    if not (folder / "modules.json").is_file():
        return None
    return SearchSpec(mode="bi", pooling=pooling_of(folder))


@dataclass
class BiEncoder:
    """A bi-encoder opened to rank with (ours or a sentence-transformers folder), and its text vectors."""

    spec: SearchSpec
    tokenizer: Any
    layout: Layout
    device: torch.device
    model: Any

    @staticmethod
    def open(model: str) -> BiEncoder:
        spec = SearchSpec.read(resolve(model)) or zero_shot_spec(model)
        if spec is None or spec.mode != "bi":
            raise UserError(f"{model}: not a bi-encoder (search finetune --mode bi, or a sentence-transformers folder)")
        tokenizer = load_tokenizer(model)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return BiEncoder(spec, tokenizer, Layout.of(tokenizer), device, load_bi_encoder(model, spec.pooling).to(device).eval())

    def vectors(self, texts: list[str], max_length: int, batch_size: int, bar=None) -> np.ndarray:
        """Unit vectors of texts (queries: the spec's query_length; code: its max_length); `bar`: a tqdm bar to advance."""
        return encode_all(self.model, encode_texts(self.tokenizer, texts), max_length, batch_size, self.device, self.layout, bar).numpy()


def main(cfg: SearchEvaluateConfig) -> dict[str, Any]:
    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = SearchSpec.read(resolve(cfg.model)) or zero_shot_spec(cfg.model)
    if spec is None:
        raise UserError(f"{cfg.model}: no search_model.json; fine-tune it first with `codebert search finetune`")
    if cfg.full and spec.mode != "bi":
        raise UserError("--full ranks by vectors: it needs a bi-encoder (--mode bi)")
    if cfg.ranking != "dense" and (spec.mode != "bi" or cfg.full):
        raise UserError(f"--ranking {cfg.ranking}: fuses a bi-encoder's group scores with BM25 (not with --mode cross or --full)")
    tokenizer = load_tokenizer(cfg.model)
    layout = Layout.of(tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = (load_cross_encoder(cfg.model) if spec.mode == "cross" else load_bi_encoder(cfg.model, spec.pooling)).to(device).eval()
    reranker = load_cross_encoder(cfg.rerank).to(device).eval() if cfg.rerank else None
    rerank_spec = SearchSpec.read(cfg.rerank) if cfg.rerank else None
    if cfg.rerank and (rerank_spec is None or rerank_spec.mode != "cross"):
        raise UserError(f"--rerank {cfg.rerank}: not a fine-tuned cross-encoder (search_model.json with mode cross)")

    figures: dict[str, Any] = {"model": cfg.model, "label": cfg.label or Path(cfg.model).parent.name or cfg.model, "mode": spec.mode,
                               "ranking": cfg.ranking}
    if cfg.ranking == "hybrid":
        figures.update(fusion=cfg.fusion, lexical_weight=cfg.lexical_weight if cfg.fusion == "sum" else None)
    if cfg.ranking != "dense":
        figures["lexical_form"] = cfg.lexical_form
    mrrs, started = {}, time.perf_counter()
    for lang in languages_of(cfg.language, cfg.data):
        examples = load_examples(cfg.data, cfg.split, [lang])
        examples.queries = short_queries(examples.queries, cfg.query_words)
        groups = groups_for(len(examples), cfg.group_size, cfg.max_groups)
        per_group = min(cfg.queries_per_group or cfg.group_size, cfg.group_size)
        lang_start = time.perf_counter()
        if spec.mode == "cross":
            bar = tqdm(total=len(groups) * per_group * cfg.group_size, desc=f"{lang} pairs", unit="pair",
                       unit_scale=True, dynamic_ncols=True, disable=not cfg.progress)
            scorer = CrossScorer(model, tokenizer, examples, spec, cfg.batch_size, device, bar)
            mrrs[lang], queries = group_mrr(scorer, groups, cfg.queries_per_group)
            bar.close()
            figures[f"{lang}_pairs_per_s"] = scorer.pairs_scored / max(scorer.seconds, 1e-9)
        else:
            if cfg.ranking == "lexical":
                scorer = FtsScorer(examples, cfg.lexical_form)
            else:
                bi = BiEncoder(spec, tokenizer, layout, device, model)
                q, c = bi.vectors(examples.queries, spec.query_length, cfg.batch_size), bi.vectors(examples.codes, spec.max_length, cfg.batch_size)
                scorer = VectorScorer(q, c)
                if cfg.ranking == "hybrid":
                    scorer = FusedScorer(scorer, FtsScorer(examples, cfg.lexical_form), cfg.fusion, cfg.lexical_weight)
            mrrs[lang], queries = group_mrr(scorer, groups, cfg.queries_per_group)
            if cfg.full:
                rerank_fn = None
                if reranker is not None:
                    cross = CrossScorer(reranker, tokenizer, examples, rerank_spec, cfg.batch_size, device)

                    def rerank_fn(i: int, candidates: np.ndarray) -> np.ndarray:
                        return cross.score(np.array([i]), np.asarray(candidates))[0]
                for key, value in full_ranking_mrr(q, c, rerank_fn, cfg.rerank_k).items():
                    figures[f"{lang}_{key}"] = value
                figures[f"{lang}_full_candidates"] = len(examples)
        figures[lang] = mrrs[lang]
        figures[f"{lang}_queries"] = queries
        figures[f"{lang}_seconds"] = time.perf_counter() - lang_start
        log.info("%s: MRR %.4f over %d queries", lang, mrrs[lang], queries)
    figures["languages"] = sorted(mrrs)
    figures["macro_mrr"] = float(np.mean(list(mrrs.values())))
    figures["seconds"] = time.perf_counter() - started
    figures["protocol"] = {"group_size": cfg.group_size, "max_groups": cfg.max_groups, "queries_per_group": cfg.queries_per_group, "split": cfg.split}
    if cfg.query_words:
        figures["protocol"]["query_words"] = cfg.query_words
    if cfg.out is not None:
        write_results(cfg.out, figures)
    how = f"{cfg.split}, groups of {cfg.group_size}" + (f", {cfg.max_groups} per language" if cfg.max_groups else "") + \
        (f", {cfg.queries_per_group} queries each" if cfg.queries_per_group else "") + \
        ("" if cfg.ranking == "dense" else f", {cfg.ranking}" + (f" {cfg.fusion}" + (f" {cfg.lexical_weight:g}" if cfg.fusion == "sum" else "") if cfg.ranking == "hybrid" else "")) + \
        (f", queries cut to {cfg.query_words} words" if cfg.query_words else "") + \
        (", BM25 in sub-words as they are" if cfg.ranking != "dense" and cfg.lexical_form == "words" else "")
    model_card.add_figures(Path(resolve(cfg.model)), [model_card.Figure(cfg.split, f"macro MRR ({how})", figures["macro_mrr"], model_card.command_line())])
    return figures


def render(figures: dict[str, Any]) -> str:
    return render_results(figures)
