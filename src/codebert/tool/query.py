"""`codebert query`: search an index (`codebert.tool.store`) in plain English, optionally re-ranking
the vector search's candidates with a fine-tuned cross-encoder (`--rerank`)."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebert.config import option
from codebert.errors import UserError
from codebert.tool.filters import PathFilter
from codebert.tool.results import result
from codebert.tool.store import IndexStore, Ranking


@dataclass
class QueryConfig:
    index: Path = option(help="index folder from `codebert index`", positional=True)
    text: str = option(help="what the code should do, in plain English", positional=True)
    k: int = option(10, "results to show")
    language: str | None = option(None, "only results in this language")
    path: list[str] = option([], "only functions whose file matches one of these globs (relative to its indexed root, or "
                                 "absolute; `**` spans folders: 'src/**', '**/*_util.py'); repeatable")
    exclude: list[str] = option([], "leave out functions whose file matches one of these globs ('**/tests/**'); repeatable")
    snippet_lines: int = option(6, "lines of each function to show")
    ranking: Literal["auto", "dense", "lexical", "hybrid"] = option(
        "auto", "dense: by the vectors; lexical: BM25 over identifiers split into sub-words; hybrid: both fused; "
                "auto: what the index records (the model's choice on valid, `codebert search hybrid`)")
    rerank: str | None = option(None, "cross-encoder folder (`search finetune --mode cross`) that re-orders the top --rerank-k")
    rerank_k: int = option(50, "candidates the cross-encoder re-scores (at least -k)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    engine: Literal["auto", "onnx", "torch"] = option(
        "auto", "how the query is encoded: onnx (the index's exported encoder, no torch import: fast to start), "
                "torch (the model folder, as the index encoded code), auto: onnx where the index has it")

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.k <= 1000:
            problems.append("-k/--k: must be in [1, 1000]")
        if not 1 <= self.rerank_k <= 1000:
            problems.append("--rerank-k: must be in [1, 1000]")
        if not self.text.strip():
            problems.append("the query is empty")
        if len(self.text) > 2000:
            problems.append("the query is longer than 2,000 characters")
        if self.snippet_lines < 0:
            problems.append("--snippet-lines: must be >= 0")
        if self.threads < 0:
            problems.append("--threads: must be >= 0 (0: torch's default)")
        try:
            PathFilter.of(self.path, self.exclude)
        except UserError as exc:
            problems.append(f"--path/--exclude: {exc}")
        return problems


_WORD = re.compile(r"[A-Za-z0-9]{3,}")


def highlight_terms(query: str) -> list[str]:
    """Query words of 3+ characters, lower-cased, used to highlight snippets."""
    return sorted({w.lower() for w in _WORD.findall(query)}, key=lambda w: (-len(w), w))  # longest first, then a-z


def snippet(text: str, terms: list[str], lines: int, mark: tuple[str, str]) -> str:
    shown = "\n".join(text.splitlines()[:lines])
    if not terms:
        return shown
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    return pattern.sub(lambda m: f"{mark[0]}{m.group(0)}{mark[1]}", shown)


def query_main(cfg: QueryConfig) -> dict[str, Any]:
    # Imported here: the lean query path never imports torch: only the torch engine and the re-ranker do, when used.
    from codebert.tool.query_encoder import open_encoder

    store = IndexStore(cfg.index)
    started = time.perf_counter()
    encoder = open_encoder(cfg.index, store.manifest["model"], cfg.threads, cfg.engine)
    load_seconds = time.perf_counter() - started
    reranker = Reranker(cfg.rerank, cfg.threads) if cfg.rerank else None
    t0 = time.perf_counter()
    vector = encoder.encode_queries([cfg.text])[0]
    ranking = chosen_ranking(store, cfg.ranking)
    depth = cfg.k if reranker is None else max(cfg.k, cfg.rerank_k)
    paths = PathFilter.of(cfg.path, cfg.exclude)
    results = store.rank_many(vector[None], [cfg.text], depth, [cfg.language], ranking, paths)[0]
    if reranker is not None:
        results = reranker.rerank(cfg.text, results)[: cfg.k]
    latency = time.perf_counter() - t0
    return {"query": cfg.text, "results": [result(r, cfg.snippet_lines) for r in results], "terms": highlight_terms(cfg.text),
            "latency_ms": 1000 * latency, "load_seconds": load_seconds, "functions": store.manifest["functions"],
            "ranking": ranking.as_dict()}


def chosen_ranking(store: IndexStore, asked: str) -> Ranking:
    """auto: the index's ranking; hybrid where the index records another: its fusion if it has one,
    else reciprocal-rank fusion (no weight to choose); dense or lexical: as asked."""
    if asked == "auto":
        return store.ranking
    if asked == "hybrid":
        return store.ranking if store.ranking.ranking == "hybrid" else Ranking("hybrid", "rrf")
    return Ranking(asked)


class Reranker:
    """The paper's cross-encoder re-scoring the vector search's candidates, pair by pair."""

    def __init__(self, model: str, threads: int = 0):
        # Imported here: the lean query path never imports torch: only the torch engine and the re-ranker do, when used.
        import torch

        from codebert.search.models import SearchSpec, cross_layout, load_cross_encoder
        from codebert.backbone import load_tokenizer

        spec = SearchSpec.read(model)
        if spec is None or spec.mode != "cross":
            raise UserError(f"--rerank {model}: not a fine-tuned cross-encoder (search_model.json with mode cross)")
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer, self.spec = load_cross_encoder(model).eval(), load_tokenizer(model), spec
        self.max_length = spec.max_length
        self.layout = cross_layout(self.tokenizer, spec)
        self.batch_size = 64

    def rerank(self, query: str, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Candidates re-ordered by the positive-class logit of (query, code tokens); `score` becomes that
        logit and the vector score is kept as `vector_score` (a hybrid candidate's, with its `lexical_score`)."""
        if not candidates:
            return []
        codes = [c["tokens"] or " ".join(c["text"].split()) for c in candidates]  # indexes made before tokens were kept
        scores = self.score(query, codes)
        for candidate, score in zip(candidates, scores):
            candidate.setdefault("vector_score", candidate["score"])  # a hybrid candidate has its own already
            candidate["score"] = float(score)
        return sorted(candidates, key=lambda c: -c["score"])

    def score(self, query: str, codes: list[str]) -> np.ndarray:
        """The positive-class logit of each (query, code) pair, as `codebert search evaluate` scores pairs:
        the texts tokenised without special tokens, each pair laid out and truncated longest-first by the
        tokenizer's layout, pairs batched by total length so that each batch pads little."""
        # Imported here: the lean query path never imports torch: only the torch engine and the re-ranker do, when used.
        import torch

        from codebert.search.models import cross_inputs, positive_logit

        # verbose=False: long functions are expected here; the layout truncates them.
        tokenized = self.tokenizer([query, *codes], add_special_tokens=False, verbose=False)["input_ids"]
        query_ids, code_ids = np.asarray(tokenized[0], dtype=np.int32), [np.asarray(ids, dtype=np.int32) for ids in tokenized[1:]]
        q_len = min(len(query_ids), self.max_length)
        order = np.argsort([q_len + min(len(c), self.max_length) for c in code_ids], kind="stable")
        device = next(self.model.parameters()).device
        out = np.empty(len(codes), dtype=np.float32)
        with torch.inference_mode():
            for begin in range(0, len(order), self.batch_size):
                batch = order[begin : begin + self.batch_size]
                pairs = cross_inputs([(query_ids, code_ids[j]) for j in batch], self.spec, self.layout)
                out[batch] = positive_logit(self.model, pairs, device).float().cpu().numpy()
        return out


def query_render(figures: dict[str, Any]) -> str:
    bold = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    lines = [f"{len(figures['results'])} results for {figures['query']!r} among {figures['functions']} functions "
             f"({figures['latency_ms']:.1f} ms)"]
    for n, r in enumerate(figures["results"], 1):
        lines.append(f"\n{n}. {r['location']}  {r['name']}  [{r['language']}]  score {r['score']:.3f}")
        lines.extend("   " + line for line in snippet(r["snippet"], figures["terms"], len(r["snippet"].splitlines()), bold).splitlines())
    return "\n".join(lines)
