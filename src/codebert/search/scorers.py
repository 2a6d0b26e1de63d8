"""Scoring queries against code with a model: the scorers the paper's MRR protocol ranks with
(cross-encoder pairs, vectors, BM25 in `bm25.py`), the groups they rank in, and full-split ranking."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from codebert.errors import UserError
from codebert.inputs import ROBERTA, Layout, encode_texts
from codebert.search.data import SearchExamples, evaluation_groups
from codebert.search.metrics import gold_ranks, mean_reciprocal_rank
from codebert.search.models import SearchSpec, cross_inputs, cross_layout, positive_logit, single_inputs


class Scorer(Protocol):
    def score(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(len(queries), len(codes)) scores of every query against every code (example indices)."""


class CrossScorer:
    """Scores pairs with a cross-encoder: the positive-class logit of each (query, code) pair."""

    def __init__(self, model, tokenizer, examples: SearchExamples, spec: SearchSpec, batch_size: int, device, bar: tqdm | None = None):
        """`spec`: the cross-encoder's search_model.json (its window, pair layout and NL cut)."""
        self.model, self.spec, self.batch_size, self.device, self.bar = model.eval(), spec, batch_size, device, bar
        self.max_length = spec.max_length
        self.layout = cross_layout(tokenizer, spec)
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
            batch = cross_inputs([(self.queries[queries[a]], self.codes[codes[b]]) for a, b in zip(qi, ci)], self.spec, self.layout)
            out[flat] = positive_logit(self.model, batch, self.device).float().cpu().numpy()
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


@torch.no_grad()
def encode_all(model, sequences: list[np.ndarray], max_length: int, batch_size: int, device, layout: Layout = ROBERTA,
               bar=None) -> torch.Tensor:
    """Unit vectors of every sequence, batched by length (sorted), returned in input order; `bar`: a
    tqdm bar advanced by each batch's size."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    out = torch.empty((len(sequences), model.encoder.config.hidden_size))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = single_inputs([sequences[i] for i in idx], max_length, layout)
        out[torch.from_numpy(idx)] = model(ids.to(device), mask.to(device)).float().cpu()
        if bar is not None:
            bar.update(len(idx))
    return out
