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

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from codebert.backbone import resolve
from codebert.inputs import Layout
from codebert.config import option
from codebert.corpus.jsonl import atomic_write, corpus_files
from codebert.errors import UserError
from codebert.pretrain_data import encode_texts
from codebert.report import format_table
from codebert.search.data import GROUP_SIZE, SearchExamples, evaluation_groups, load_examples
from codebert.search.metrics import gold_ranks, mean_reciprocal_rank
from codebert.search.models import SearchSpec, cross_inputs, load_bi_encoder, load_cross_encoder, positive_logit

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
        for name in ("max_groups", "queries_per_group", "threads"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        if self.batch_size < 1 or self.rerank_k < 1:
            problems.append("--batch-size and --rerank-k: must be >= 1")
        return problems


class Scorer(Protocol):
    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(len(queries), len(codes)) scores of every query against every code (example indices)."""


class CrossScorer:
    """Scores pairs with a cross-encoder: the positive-class logit of each (query, code) pair."""

    def __init__(self, model, tokenizer, examples: SearchExamples, max_length: int, batch_size: int, device, bar: tqdm | None = None):
        self.model, self.max_length, self.batch_size, self.device, self.bar = model.eval(), max_length, batch_size, device, bar
        self.layout = Layout.of(tokenizer)
        self.queries = encode_texts(tokenizer, examples.queries)
        self.codes = encode_texts(tokenizer, examples.codes)
        self.pairs_scored, self.seconds = 0, 0.0

    @torch.inference_mode()
    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        q_len = np.array([min(len(self.queries[i]), self.max_length) for i in queries])
        c_len = np.array([min(len(self.codes[j]), self.max_length) for j in codes])
        # Sort all pairs by total length so that each batch pads little.
        total = (q_len[:, None] + c_len[None, :]).ravel()
        order = np.argsort(total, kind="stable")
        out = np.empty(len(total), dtype=np.float32)
        for begin in range(0, len(order), self.batch_size):
            flat = order[begin : begin + self.batch_size]
            qi, ci = np.divmod(flat, len(codes))
            ids, mask = cross_inputs([(self.queries[queries[a]], self.codes[codes[b]]) for a, b in zip(qi, ci)], self.max_length, self.layout)
            out[flat] = positive_logit(self.model, ids.to(self.device), mask.to(self.device)).float().cpu().numpy()
            if self.bar is not None:
                self.bar.update(len(flat))
        self.pairs_scored += len(total)
        self.seconds += time.perf_counter() - start
        return out.reshape(len(queries), len(codes))


class VectorScorer:
    """Scores by dot product of vectors computed once per query and per code."""

    def __init__(self, query_vectors: np.ndarray, code_vectors: np.ndarray):
        self.query_vectors, self.code_vectors = query_vectors, code_vectors

    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.query_vectors[queries] @ self.code_vectors[codes].T


def group_mrr(scorer: Scorer, groups: list[np.ndarray], queries_per_group: int = 0) -> tuple[float, int]:
    """MRR of the paper's protocol over the given groups; also the number of queries ranked."""
    ranks = []
    for group in groups:
        queries = group[:queries_per_group] if queries_per_group else group
        scores = scorer.score(queries, group)
        ranks.append(gold_ranks(scores, np.arange(len(queries))))  # query i's own code is candidate i
    ranks = np.concatenate(ranks)
    return mean_reciprocal_rank(ranks), len(ranks)


def languages_of(cfg_language: list[str], data: Path) -> list[str]:
    return sorted(cfg_language) if cfg_language else sorted(corpus_files(data))


def groups_for(n: int, group_size: int, max_groups: int) -> list[np.ndarray]:
    groups = evaluation_groups(n, group_size)
    if not groups:
        raise UserError(f"{n} test examples: fewer than one group of {group_size} (use --group-size)")
    return groups[:max_groups] if max_groups else groups


def full_ranking_mrr(query_vectors: np.ndarray, code_vectors: np.ndarray, rerank=None, k: int = 10) -> dict[str, float]:
    """Each query ranked against every code of the split (gold = its own); optionally the top k
    re-ranked by `rerank(query, candidates) -> scores`. Same tie rule as the groups."""
    scores = query_vectors @ code_vectors.T
    ranks = gold_ranks(scores, np.arange(len(scores)))
    figures = {"full_mrr": mean_reciprocal_rank(ranks), "full_recall_at_10": float(np.mean(ranks <= 10))}
    if rerank is not None:
        reranked = ranks.copy()
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for i in range(len(scores)):
            if ranks[i] > k or i not in top[i]:
                continue  # the gold is outside the re-ranked head: its rank is unchanged
            cross = rerank(i, top[i])
            reranked[i] = int((cross >= cross[list(top[i]).index(i)]).sum())
        figures["rerank_mrr"] = mean_reciprocal_rank(reranked)
    return figures


def zero_shot_spec(model: str) -> SearchSpec | None:
    """A sentence-transformers folder (or `minilm`) without our search_model.json: evaluated as it is,
    as a bi-encoder with its own pooling (the "zero-shot" rows), at our bi-encoder's default lengths."""
    from codebert.encoder import pooling_of

    folder = Path(resolve(model))
    if not (folder / "modules.json").is_file():
        return None
    return SearchSpec(mode="bi", pooling=pooling_of(folder))


def main(cfg: SearchEvaluateConfig) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from codebert.search.finetune import encode_all
    from codebert.backbone import load_tokenizer

    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = SearchSpec.read(resolve(cfg.model)) or zero_shot_spec(cfg.model)
    if spec is None:
        raise UserError(f"{cfg.model}: no search_model.json; fine-tune it first with `codebert search finetune`")
    if cfg.full and spec.mode != "bi":
        raise UserError("--full ranks by vectors: it needs a bi-encoder (--mode bi)")
    tokenizer = load_tokenizer(cfg.model)
    layout = Layout.of(tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = (load_cross_encoder(cfg.model) if spec.mode == "cross" else load_bi_encoder(cfg.model, spec.pooling)).to(device).eval()
    reranker = load_cross_encoder(cfg.rerank).to(device).eval() if cfg.rerank else None
    rerank_spec = SearchSpec.read(cfg.rerank) if cfg.rerank else None
    if cfg.rerank and (rerank_spec is None or rerank_spec.mode != "cross"):
        raise UserError(f"--rerank {cfg.rerank}: not a fine-tuned cross-encoder (search_model.json with mode cross)")

    figures: dict[str, Any] = {"model": cfg.model, "label": cfg.label or Path(cfg.model).parent.name or cfg.model, "mode": spec.mode}
    mrrs, started = {}, time.perf_counter()
    for lang in languages_of(cfg.language, cfg.data):
        examples = load_examples(cfg.data, cfg.split, [lang])
        groups = groups_for(len(examples), cfg.group_size, cfg.max_groups)
        per_group = min(cfg.queries_per_group or cfg.group_size, cfg.group_size)
        lang_start = time.perf_counter()
        if spec.mode == "cross":
            bar = tqdm(total=len(groups) * per_group * cfg.group_size, desc=f"{lang} pairs", unit="pair",
                       unit_scale=True, dynamic_ncols=True, disable=not cfg.progress)
            scorer = CrossScorer(model, tokenizer, examples, spec.max_length, cfg.batch_size, device, bar)
            mrrs[lang], queries = group_mrr(scorer, groups, cfg.queries_per_group)
            bar.close()
            figures[f"{lang}_pairs_per_s"] = scorer.pairs_scored / max(scorer.seconds, 1e-9)
        else:
            q = encode_all(model, encode_texts(tokenizer, examples.queries), spec.query_length, cfg.batch_size, device, layout).numpy()
            c = encode_all(model, encode_texts(tokenizer, examples.codes), spec.max_length, cfg.batch_size, device, layout).numpy()
            mrrs[lang], queries = group_mrr(VectorScorer(q, c), groups, cfg.queries_per_group)
            if cfg.full:
                rerank_fn = None
                if reranker is not None:
                    cross = CrossScorer(reranker, tokenizer, examples, rerank_spec.max_length, cfg.batch_size, device)

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
    if cfg.out is not None:
        write_figures(cfg.out, figures)
    return figures


def write_figures(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(json.dumps(figures, indent=2) + "\n")


def render(figures: dict[str, Any]) -> str:
    langs = figures["languages"]
    rows = [[lang, figures[lang], figures[f"{lang}_queries"]] for lang in langs]
    rows.append(["macro-average", figures["macro_mrr"], sum(figures[f"{lang}_queries"] for lang in langs)])
    text = format_table(["language", "MRR", "queries"], rows)
    extra = [[k, v] for k, v in figures.items() if any(k == f"{lang}_{s}" for lang in langs for s in ("full_mrr", "full_recall_at_10", "rerank_mrr", "pairs_per_s"))]
    if extra:
        text += "\n" + format_table(["figure", "value"], extra)
    return text
