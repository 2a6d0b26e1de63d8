"""`codebert search finetune`: the paper's cross-encoder (§4.1) or a bi-encoder, on one corpus.

Cross (the paper): a two-class classifier on `<s> NL </s> CODE </s>` (CodeBERT's layout, the NL cut
to 50 tokens: models.py), trained with
cross-entropy on a balanced set (every pair, plus one negative per pair made by replacing its
NL or its code), validated by accuracy on the valid split made the same way; best/ keeps the
model at the best validation. The paper's settings are the `base` preset: lr 1e-5, batch 64,
max length 200, 8 epochs.

Bi (beyond the paper): a shared encoder trained with in-batch InfoNCE (optionally one BM25
hard negative per query), validated by MRR on the valid split's 1,000-candidate groups.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Any

import numpy as np
import torch
import torch.nn.functional as F

from codebert.config import option
from codebert import model_card
from codebert.errors import UserError
from codebert.inputs import encode_texts
from codebert.io import atomic_write
from codebert.tables import numeric_table
from codebert.search.data import ClassificationPairs, GROUP_SIZE, SearchExamples, balanced_pairs, evaluation_groups, load_examples
from codebert.search import hybrid
from codebert.bm25 import bm25_index, bm25_tokens
from codebert.corpus.jsonl import positions_by_language
from codebert.search.metrics import gold_ranks, mean_reciprocal_rank
from codebert.search.scorers import encode_all
from codebert.search.models import (
    SEARCH_FILE,
    Mode, Pooling, SearchSpec, cross_inputs, cross_layout, info_nce, load_bi_encoder, load_cross_encoder, save_bi_encoder, single_inputs,
)
from codebert.backbone import load_config, load_tokenizer, max_tokens
from codebert.inputs import ROBERTA, Layout, PairBatch, PairStyle
from codebert.training.stage import FinetuneConfig, TrainingStage, load_wrapped_encoder, save_with_tokenizer

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SearchFinetuneConfig(FinetuneConfig):
    """The paper's settings (§4.1) are the defaults: lr 1e-5, batch 64, max length 200, up to 8
    epochs keeping the best on validation, one language per run."""

    mode: Mode = option("cross", "cross: the paper's pair classifier; bi: a bi-encoder for retrieval")
    language: list[str] = option([], "languages to fine-tune on (the paper: one per run; empty: all in the corpus)")
    learning_rate: float = option(1e-5, "peak learning rate of AdamW (the paper: 1e-5)")
    max_length: int = option(200, "cross: tokens per pair (the paper: 200); bi: tokens per code input")
    query_length: int = option(64, "bi: tokens per query input")
    pair_layout: PairStyle = option("codebert", "cross: codebert: <s> NL </s> CODE </s>, one separator (CodeBERT's codesearch/utils.py); "
                                    "tokenizer: the tokenizer's own pair template (RoBERTa: <s> NL </s></s> CODE </s>)")
    nl_length: int = option(50, "cross: NL tokens kept before the pair is cut to --max-length (codesearch/utils.py: 50; 0: not cut)")
    pooling: Pooling = option("mean", "bi: mean over tokens or the <s> vector")
    temperature: float = option(0.05, "bi: softmax temperature of the in-batch contrastive loss")
    hard_negatives: bool = option(False, "bi: add one hard negative code per query (--hard-negatives-from) as an extra negative")
    hard_negatives_from: Literal["bm25", "model"] = option(
        "bm25", "bi: bm25: each query's best BM25 match among the codes of its language that is not its own; model: its nearest code of its language by "
                "the starting model's vectors, among those scoring at least --negative-margin below its own (closer ones are "
                "likely false negatives: another correct answer)")
    negative_margin: float = option(0.05, "bi, --hard-negatives-from model: the least cosine gap below the query's own code")
    symmetric_loss: bool = option(False, "bi: also the code -> query direction of the contrastive loss (the mean of both)")
    language_batches: bool = option(False, "bi: every batch from one language (the test's distractors share the query's "
                                    "language), languages in proportion to their examples")
    choose_ranking: bool = option(True, "bi: after training, choose on the valid split how best/'s scores are fused with BM25 "
                                        "(`codebert search hybrid --save`): `codebert index` then ranks that way")
    eval_batch_size: int = option(128, "inputs per forward pass at validation")
    best_metric: str = option("", "metric that picks best/ (empty: acc for cross, mrr for bi)")

    def validate(self) -> list[str]:
        problems = self.validate_finetune(min_batch=2)  # in-batch negatives need company
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if not 8 <= self.max_length <= 512:
            problems.append("--max-length: must be in [8, 512]")
        if not 4 <= self.query_length <= 512:
            problems.append("--query-length: must be in [4, 512]")
        if self.nl_length < 0:
            problems.append("--nl-length: must be >= 0")
        if not self.temperature > 0:
            problems.append("--temperature: must be > 0")
        if self.negative_margin < 0:
            problems.append("--negative-margin: must be >= 0")
        for name in ("hard_negatives", "symmetric_loss", "language_batches"):
            if getattr(self, name) and self.mode != "bi":
                problems.append(f"--{name.replace('_', '-')}: only for --mode bi")
        if self.eval_batch_size < 1:
            problems.append("--eval-batch-size: must be >= 1")
        return problems


# ------------------------------------------------------------------------------------ batches
@dataclass
class TokenisedExamples:
    queries: list[np.ndarray]  # query token ids per example (no special tokens)
    codes: list[np.ndarray]  # code token ids per example

    @staticmethod
    def of(examples: SearchExamples, tokenizer) -> TokenisedExamples:
        return TokenisedExamples(encode_texts(tokenizer, examples.queries), encode_texts(tokenizer, examples.codes))


@dataclass
class PairCorpus:
    """The cross-encoder's balanced training set, in the shape BucketedBatches batches."""

    tokens: TokenisedExamples
    pairs: ClassificationPairs
    spec: SearchSpec  # how pairs are laid out and cut
    layout: Layout = ROBERTA  # the tokenizer's special tokens, in the spec's pair style

    def __len__(self) -> int:
        return len(self.pairs)

    def lengths(self, max_length: int) -> np.ndarray:
        q = np.array([len(self.tokens.queries[i]) for i in self.pairs.query])
        c = np.array([len(self.tokens.codes[i]) for i in self.pairs.code])
        return np.minimum(q + c + 4, max_length)


@dataclass
class CrossBatch:
    pairs: PairBatch  # (B, T) ids, attention mask, token types
    labels: torch.Tensor  # (B,) 1 relevant, 0 not

    def num_tokens(self) -> int:
        return int(self.pairs.attention_mask.sum())


def collate_cross(corpus: PairCorpus, indices, max_length: int) -> CrossBatch:
    # max_length is the batcher's; the spec's is the same (the stage passes cfg.max_length to both)
    pairs = [(corpus.tokens.queries[corpus.pairs.query[i]], corpus.tokens.codes[corpus.pairs.code[i]]) for i in indices]
    return CrossBatch(cross_inputs(pairs, corpus.spec, corpus.layout), torch.from_numpy(corpus.pairs.label[np.asarray(indices)]))


@dataclass
class BiCorpus:
    """The bi-encoder's training set: positive pairs, optionally one hard negative code each."""

    tokens: TokenisedExamples
    query_length: int
    hard: np.ndarray | None = None  # (N,) index of each query's hard-negative code, or None
    layout: Layout = ROBERTA  # the tokenizer's special tokens

    def __len__(self) -> int:
        return len(self.tokens.codes)

    def lengths(self, max_length: int) -> np.ndarray:
        return np.minimum(np.array([len(c) for c in self.tokens.codes]) + 2, max_length)


@dataclass
class BiBatch:
    query_ids: torch.Tensor  # (B, Tq)
    query_mask: torch.Tensor
    code_ids: torch.Tensor  # (B [+ B hard negatives], Tc)
    code_mask: torch.Tensor

    def num_tokens(self) -> int:
        return int(self.query_mask.sum() + self.code_mask.sum())


def collate_bi(corpus: BiCorpus, indices, max_length: int) -> BiBatch:
    indices = list(indices)
    q_ids, q_mask = single_inputs([corpus.tokens.queries[i] for i in indices], corpus.query_length, corpus.layout)
    codes = [corpus.tokens.codes[i] for i in indices]
    if corpus.hard is not None:
        codes += [corpus.tokens.codes[corpus.hard[i]] for i in indices]
    c_ids, c_mask = single_inputs(codes, max_length, corpus.layout)
    return BiBatch(q_ids, q_mask, c_ids, c_mask)


RANKING_FILE = "ranking-valid.json"  # in the run folder: every figure the choice of best/'s ranking was made on


def choose_ranking(cfg: SearchFinetuneConfig) -> dict[str, Any]:
    """`search hybrid --save` on best/: the fusion with BM25 chosen on the valid split, in groups of up to
    1,000 (the smallest language's valid split where it has fewer); its figures kept in RUN/RANKING_FILE."""
    sizes = Counter(load_examples(cfg.data, "valid", cfg.language).languages)
    return hybrid.main(hybrid.SearchHybridConfig(model=str(cfg.out / "best"), data=cfg.data, language=list(cfg.language),
                                                 group_size=min(1000, *sizes.values()), save=True, progress=False,
                                                 threads=cfg.threads, batch_size=cfg.eval_batch_size,
                                                 out=cfg.out / RANKING_FILE))


def cached_hard_negatives(cfg: SearchFinetuneConfig, examples: int, mine) -> np.ndarray:
    """`mine()`'s hard negatives, mined once per run: a resumed run reads them back from
    RUN/hard_negatives.npy (with the source they came from) rather than mining the training split
    again (hours for the model's, minutes for BM25's)."""
    path, source = cfg.out / "hard_negatives.npy", cfg.out / "hard_negatives.json"
    if path.is_file() and source.is_file() and json.loads(source.read_text()) == {"from": cfg.hard_negatives_from, "examples": examples}:
        return np.load(path)
    hard = mine()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, binary=True) as f:
        np.save(f, hard)
    with atomic_write(source) as f:  # after the negatives: a record never names negatives that are not there
        f.write(json.dumps({"from": cfg.hard_negatives_from, "examples": len(hard)}) + "\n")
    return hard


def _model_negatives(cfg: SearchFinetuneConfig, model, tokens: TokenisedExamples, languages: list[str], spec: SearchSpec, device,
                     layout: Layout) -> np.ndarray:
    log.info("mining hard negatives: encoding %d training queries and codes with the starting model", len(languages))
    model.eval()
    hard = mined_hard_negatives(model, tokens, languages, spec, cfg.negative_margin, cfg.eval_batch_size, device, layout)
    model.train()
    return hard


def bm25_hard_negatives(examples: SearchExamples) -> np.ndarray:
    """For each query, the training code of its own language that BM25 ranks highest and that is not
    its own (nor an identical copy): one index per language, as the test's distractors share the
    query's language (and a query scores 20,000 codes of csn6's language, not all 120,000)."""
    hard = np.empty(len(examples), dtype=np.int64)
    for members in positions_by_language(examples.languages).values():
        index = bm25_index([examples.codes[i] for i in members])
        k = min(3, len(members))
        results, _ = index.retrieve([bm25_tokens(examples.queries[i]) for i in members], k=k, show_progress=False)
        for position, (row, i) in enumerate(zip(results, members)):
            candidates = [members[int(j)] for j in row if members[int(j)] != i and examples.codes[members[int(j)]] != examples.codes[i]]
            hard[i] = candidates[0] if candidates else members[(position + 1) % len(members)]
    return hard


@torch.no_grad()
def mined_hard_negatives(model, tokens: TokenisedExamples, languages: list[str], spec: SearchSpec, margin: float, batch_size: int,
                         device, layout: Layout = ROBERTA, chunk: int = 2048) -> np.ndarray:
    """For each query, the code of its own language that `model` scores highest among those scoring at
    least `margin` below the query's own code (beyond the paper; sentence-transformers'
    `mine_hard_negatives` with `absolute_margin`, on our encoder and batches). A candidate closer than
    that is more often another right answer than a wrong one; identical code is never a negative.
    A query with no such candidate gets the next example of its language."""
    queries = encode_all(model, tokens.queries, spec.query_length, batch_size, device, layout).numpy()
    codes = encode_all(model, tokens.codes, spec.max_length, batch_size, device, layout).numpy()
    own = np.einsum("nd,nd->n", queries, codes)
    hard = np.empty(len(queries), dtype=np.int64)
    for members in positions_by_language(languages).values():
        members = np.array(members)
        block = codes[members]
        for start in range(0, len(members), chunk):
            rows = members[start : start + chunk]
            scores = queries[rows] @ block.T  # (rows, language's codes)
            scores[scores > (own[rows] - margin)[:, None]] = -np.inf  # the query's own code and anything as close
            # The 8 best of each row (argpartition, then those 8 in order): not a sort of the whole language per query.
            best = np.argpartition(-scores, min(8, scores.shape[1]) - 1, axis=1)[:, :8]
            best = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable"), axis=1)
            for r, i in enumerate(rows):
                for j in best[r]:
                    if np.isfinite(scores[r, j]) and not np.array_equal(tokens.codes[members[j]], tokens.codes[i]):
                        hard[i] = members[j]
                        break
                else:
                    hard[i] = members[(np.searchsorted(members, i) + 1) % len(members)]
    return hard


# --------------------------------------------------------------------------------- validation
@torch.no_grad()
def cross_accuracy(model, tokens: TokenisedExamples, pairs: ClassificationPairs, spec: SearchSpec, batch_size: int, device,
                   layout: Layout = ROBERTA) -> dict[str, float]:
    correct, loss_sum = 0, 0.0
    for start in range(0, len(pairs), batch_size):
        idx = np.arange(start, min(start + batch_size, len(pairs)))
        batch = cross_inputs([(tokens.queries[pairs.query[i]], tokens.codes[pairs.code[i]]) for i in idx], spec, layout)
        logits = model(**batch.to(device)).logits.float()
        labels = torch.from_numpy(pairs.label[idx]).to(device)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
    return {"acc": correct / len(pairs), "loss": loss_sum / len(pairs)}


def bi_mrr(model, tokens: TokenisedExamples, groups: list[np.ndarray], spec: SearchSpec, batch_size: int, device,
           layout: Layout = ROBERTA) -> dict[str, float]:
    queries = encode_all(model, tokens.queries, spec.query_length, batch_size, device, layout)
    codes = encode_all(model, tokens.codes, spec.max_length, batch_size, device, layout)
    ranks = [gold_ranks((queries[g] @ codes[g].T).numpy(), np.arange(len(g))) for g in groups]
    return {"mrr": mean_reciprocal_rank(np.concatenate(ranks))}


# --------------------------------------------------------------------------------------- main
def _per_language_cap(examples: SearchExamples, cap: int) -> SearchExamples:
    if not cap:
        return examples
    keep, seen = [], {}
    for i, lang in enumerate(examples.languages):
        seen[lang] = seen.get(lang, 0) + 1
        if seen[lang] <= cap:
            keep.append(i)
    return examples.subset(keep)


def main(cfg: SearchFinetuneConfig) -> dict[str, Any]:
    stage = TrainingStage(cfg)
    device = stage.device
    tokenizer = load_tokenizer(cfg.model)
    layout = Layout.of(tokenizer)
    window = max_tokens(load_config(cfg.model), tokenizer)
    if max(cfg.max_length, cfg.query_length) > window:
        raise UserError(f"--max-length/--query-length: {cfg.model} takes at most {window} tokens")
    train_examples = load_examples(cfg.data, "train", cfg.language, cfg.max_records)
    valid_examples = _per_language_cap(load_examples(cfg.data, "valid", cfg.language, cfg.max_records), cfg.valid_examples)
    train_tokens, valid_tokens = TokenisedExamples.of(train_examples, tokenizer), TokenisedExamples.of(valid_examples, tokenizer)
    spec = SearchSpec(mode=cfg.mode, pooling=cfg.pooling, max_length=cfg.max_length, query_length=cfg.query_length)

    if cfg.mode == "cross":
        spec = dataclasses.replace(spec, pair_layout=cfg.pair_layout, nl_length=cfg.nl_length)  # recorded for evaluate and index
        layout = cross_layout(tokenizer, spec)
        model = load_cross_encoder(cfg.model, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
        corpus = PairCorpus(train_tokens, balanced_pairs(len(train_examples), cfg.seed), spec, layout)
        collate_fn = collate_cross
        valid_pairs = balanced_pairs(len(valid_examples), cfg.seed + 1)
        best = cfg.best_metric or "acc"

        def loss_fn(m, batch: CrossBatch) -> dict[str, Any]:
            logits = m(**batch.pairs.to(device)).logits.float()
            labels = batch.labels.to(device)
            loss = F.cross_entropy(logits, labels)
            return {"loss": loss, "acc": float((logits.detach().argmax(-1) == labels).float().mean())}

        def evaluate(m) -> dict[str, float]:
            return cross_accuracy(m, valid_tokens, valid_pairs, spec, cfg.eval_batch_size, device, layout)

        save_model = save_with_tokenizer(tokenizer, spec.save)
        load_model = None  # saved under its own keys: the loop's default reads it back
    else:
        model = load_bi_encoder(cfg.model, cfg.pooling, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
        hard = None
        if cfg.hard_negatives and cfg.hard_negatives_from == "bm25":
            hard = cached_hard_negatives(cfg, len(train_examples), lambda: bm25_hard_negatives(train_examples))
        elif cfg.hard_negatives:
            hard = cached_hard_negatives(cfg, len(train_examples), lambda: _model_negatives(cfg, model, train_tokens, train_examples.languages, spec, device, layout))
        corpus = BiCorpus(train_tokens, cfg.query_length, hard, layout)
        collate_fn = collate_bi
        groups = []
        for lang in sorted(set(valid_examples.languages)):
            members = np.array([i for i, l in enumerate(valid_examples.languages) if l == lang])
            size = min(GROUP_SIZE, len(members))
            groups += [members[g] for g in evaluation_groups(len(members), size)]
        best = cfg.best_metric or "mrr"

        def loss_fn(m, batch: BiBatch) -> dict[str, Any]:
            q = m(batch.query_ids.to(device), batch.query_mask.to(device))
            c = m(batch.code_ids.to(device), batch.code_mask.to(device))
            loss = info_nce(q, c, cfg.temperature, cfg.symmetric_loss)
            return {"loss": loss}

        def evaluate(m) -> dict[str, float]:
            return bi_mrr(m, valid_tokens, groups, spec, cfg.eval_batch_size, device, layout)

        def save_model(m, folder: Path) -> None:
            save_bi_encoder(m, folder, spec)
            tokenizer.save_pretrained(folder)

        load_model = load_wrapped_encoder  # the folder is the encoder's own (a plain AutoModel folder)

    batch_groups = None
    if cfg.language_batches:
        batch_groups = np.unique(np.array(train_examples.languages), return_inverse=True)[1]  # a language id per example
    figures = stage.fit(model, loss_fn, corpus, collate_fn, cfg.max_length, save_model, load_model=load_model,
                        evaluate=evaluate, best_metric=best, groups=batch_groups)
    figures.update(out=str(cfg.out / "best"), mode=cfg.mode)
    if stage.dist.main and cfg.mode == "bi" and cfg.choose_ranking and (cfg.out / "best" / SEARCH_FILE).is_file():
        figures["ranking"] = choose_ranking(cfg)["chosen"]["name"]
    if stage.dist.main:
        valid = {f"best {best} (valid, each language's capped pairs as one group)" if best == "mrr" else f"best {best} (valid)":
                 figures[f"best_valid_{best}"]} if f"best_valid_{best}" in figures else {}
        model_card.write_training_card(cfg.out / "best", "search" if cfg.mode == "bi" else "search-cross", cfg,
                                       None if cfg.from_scratch else cfg.model, valid, figures.get("step"))
    return figures


def render(figures: dict[str, Any]) -> str:
    return numeric_table(figures) + f"\nbest model saved to {figures['out']}"
