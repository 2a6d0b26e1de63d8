"""`codebert search hybrid`: choose how a bi-encoder's scores and BM25's are fused, on valid (beyond the paper).

One pass encodes the split once per query set and scores every group once with each ranker; then
every fusion is ranked by the paper's protocol on those same score matrices (search/fusion.py):
dense alone, BM25 alone, reciprocal-rank fusion, and the normalised sum at each --weights value.
Each is measured on the summaries as they are and on short queries cut from them
(`data.short_queries`, --query-words), since real users type fewer, plainer words than a docstring.

The choice: the fusion with the highest mean macro MRR over the query sets among those that lose
to dense alone on none of them (dense itself if every fusion loses somewhere). `--save` writes it
into the model folder's search_model.json (`ranking`, `fusion`, `lexical_weight`), where
`codebert index`, `query` and `serve` read their default ranking.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from codebert.backbone import resolve
from codebert.config import option
from codebert.errors import UserError
from codebert.io import atomic_write
from codebert.search.lexical import FtsScorer
from codebert.search.data import GROUP_SIZE, languages_of, load_examples, short_queries
from codebert.search.evaluate import BiEncoder
from codebert.search.fusion import FusedScorer
from codebert.search.models import SearchSpec
from codebert.search.scorers import VectorScorer, group_mrr, groups_for
from codebert.tables import format_table

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]


@dataclass
class SearchHybridConfig:
    model: str = option(help="bi-encoder folder (search finetune --mode bi's best/, or a sentence-transformers folder such as minilm)")
    data: Path = option(help="corpus folder (CodeSearchNet layout)")
    language: list[str] = option([], "languages to rank (empty: all in the corpus)")
    split: str = option("valid", "split the choice is made on (valid: never choose on test)")
    group_size: int = option(GROUP_SIZE, "candidates per group (the paper: 1,000)")
    max_groups: int = option(0, "only the first N groups per language (0: all)")
    query_words: list[int] = option([0, 4], "query sets: 0 = the summaries as they are, K = each cut to K content words")
    weights: list[float] = option(DEFAULT_WEIGHTS, "BM25 shares of the normalised-sum fusion to try")
    lexical_form: Literal["stems", "words"] = option(
        "stems", "BM25's words as the tool writes them (stems) or the sub-words as they are (words: before 2026-12-08)")
    save: bool = option(False, "write the chosen ranking into the model folder's search_model.json")
    out: Path | None = option(None, "also write every figure as JSON to this file")
    batch_size: int = option(256, "inputs per forward pass")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = []
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.group_size < 2:
            problems.append("--group-size: must be >= 2")
        if any(w < 0 for w in self.query_words) or not self.query_words:
            problems.append("--query-words: one or more counts >= 0")
        if any(not 0 < w < 1 for w in self.weights):
            problems.append("--weights: each in (0, 1) (0 is dense alone, 1 BM25 alone: both are always measured)")
        if self.max_groups < 0 or self.threads < 0 or self.batch_size < 1:
            problems.append("--max-groups and --threads: >= 0; --batch-size: >= 1")
        if self.save and self.lexical_form != "stems":
            problems.append("--save: the index ranks with BM25 in stems; choose with --lexical-form stems")
        return problems


@dataclass
class Candidate:
    """One way to rank: a name for the table and what search_model.json records for it."""

    name: str
    ranking: str  # dense | lexical | hybrid
    fusion: str = "sum"
    lexical_weight: float = 0.0
    macro: dict[int, float] = field(default_factory=dict)  # query words -> macro MRR
    per_language: dict[int, dict[str, float]] = field(default_factory=dict)


class _Cached:
    """A scorer whose score matrices are computed once per (queries, codes) and then reused."""

    def __init__(self, scorer):
        self.scorer, self.cache = scorer, {}

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        key = (queries.tobytes(), codes.tobytes())
        if key not in self.cache:
            self.cache[key] = self.scorer.score(queries, codes)
        return self.cache[key]


def candidates(weights: list[float]) -> list[Candidate]:
    return ([Candidate("dense", "dense"), Candidate("lexical (BM25)", "lexical", lexical_weight=1.0), Candidate("rrf", "hybrid", "rrf")]
            + [Candidate(f"sum {w:g}", "hybrid", "sum", w) for w in sorted(weights)])


def choose(rows: list[Candidate]) -> Candidate:
    """The best mean macro MRR over the query sets among the rows that lose to dense on none of them."""
    dense = rows[0]
    safe = [r for r in rows if all(r.macro[k] >= dense.macro[k] for k in dense.macro)]
    return max(safe, key=lambda r: (np.mean(list(r.macro.values())), r is dense))


def main(cfg: SearchHybridConfig) -> dict[str, Any]:
    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    encoder = BiEncoder.open(cfg.model)
    spec = encoder.spec
    if cfg.save and SearchSpec.read(resolve(cfg.model)) is None:
        raise UserError(f"--save: {cfg.model} has no search_model.json to write the choice into (a fine-tuned model's folder has)")
    rows = candidates(cfg.weights)
    started = time.perf_counter()
    languages = languages_of(cfg.language, cfg.data)
    for lang in languages:
        examples = load_examples(cfg.data, cfg.split, [lang])
        groups = groups_for(len(examples), cfg.group_size, cfg.max_groups)
        codes = encoder.vectors(examples.codes, spec.max_length, cfg.batch_size)
        for words in cfg.query_words:
            asked = examples.subset(range(len(examples)))
            asked.queries = short_queries(examples.queries, words)
            queries = encoder.vectors(asked.queries, spec.query_length, cfg.batch_size)
            dense, lexical = _Cached(VectorScorer(queries, codes)), _Cached(FtsScorer(asked, cfg.lexical_form))
            for row in rows:
                scorer = {"dense": dense, "lexical": lexical}.get(row.ranking) or FusedScorer(dense, lexical, row.fusion, row.lexical_weight)
                row.per_language.setdefault(words, {})[lang] = group_mrr(scorer, groups)[0]
            log.info("%s, query words %s: dense %.4f, BM25 %.4f", lang, words or "all", rows[0].per_language[words][lang],
                     rows[1].per_language[words][lang])
    for row in rows:
        row.macro = {words: float(np.mean(list(row.per_language[words].values()))) for words in cfg.query_words}
    chosen = choose(rows)
    if cfg.save:
        spec.ranking, spec.fusion, spec.lexical_weight = chosen.ranking, chosen.fusion, chosen.lexical_weight
        spec.save(Path(resolve(cfg.model)))
    figures = {"model": cfg.model, "split": cfg.split, "languages": languages, "query_words": cfg.query_words, "lexical_form": cfg.lexical_form,
               "rows": [{"name": r.name, "ranking": r.ranking, "fusion": r.fusion, "lexical_weight": r.lexical_weight,
                         "macro": {str(k): v for k, v in r.macro.items()},
                         "per_language": {str(k): v for k, v in r.per_language.items()}} for r in rows],
               "chosen": {"name": chosen.name, "ranking": chosen.ranking, "fusion": chosen.fusion, "lexical_weight": chosen.lexical_weight},
               "saved": cfg.save, "seconds": time.perf_counter() - started,
               "protocol": {"group_size": cfg.group_size, "max_groups": cfg.max_groups, "split": cfg.split}}
    if cfg.out is not None:
        with atomic_write(cfg.out) as f:
            f.write(json.dumps(figures, indent=2) + "\n")
    return figures


def render(figures: dict[str, Any]) -> str:
    sets = [str(k) for k in figures["query_words"]]
    header = ["ranking"] + [f"macro MRR, {'summaries' if k == '0' else k + ' words'}" for k in sets]
    table = [[r["name"]] + [f"{r['macro'][k]:.4f}" for k in sets] for r in figures["rows"]]
    chosen = figures["chosen"]
    where = "; written to search_model.json" if figures["saved"] else " (--save writes it into the model folder)"
    return (format_table(header, table) + f"\n{figures['split']} split, {', '.join(figures['languages'])}; "
            f"chosen: {chosen['name']}{where}")
