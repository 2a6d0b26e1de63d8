"""`codebert search baseline`: the baselines of the paper's Table 2, on the same 1,000-candidate groups.

* BM25 (the `bm25s` library, Lucene's variant, k1 = 1.5, b = 0.75), one index per group of
  candidates, over identifiers split into lower-cased sub-words (`bm25_tokens`).
* CodeSearchNet's joint embeddings (Husain et al., 2019), with the settings of their code
  (`src/models/*`, `src/encoders/*` of github/CodeSearchNet): separate query and code encoders of
  one type, token embeddings of 128, weighted-mean pooling (a sigmoid gate per token), the softmax
  loss over in-batch dot products, Adam with gradient clipping 1, dropout keep 0.9, code/query
  lengths 200/30, queries lower-cased, early stopping on validation MRR with patience 5, test
  ranking by cosine similarity.
    nbow     bag of words; batch 1,000, lr 0.01
    cnn      3 x 1-D convolution (128 channels, width 16, residual, tanh) with learned positions; batch 1,000, lr 5e-4
    birnn    2-layer bidirectional LSTM (64 per direction); batch 1,000, lr 0.01
    selfatt  3-layer BERT (hidden 128, 8 heads, FFN 512); batch 450, lr 5e-4
  One difference: tokens are the ids of our byte-level BPE tokenizer (CodeSearchNet built its own
  10,000-entry word + BPE vocabulary); CodeSearchNet's NBoW used a cosine margin loss by default,
  here every encoder uses the softmax loss, as the paper's description of the baselines says.
These networks exist in no maintained PyTorch library, so they are written here, small.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from codebert.config import option
from codebert.inputs import encode_texts
from codebert.search.data import GROUP_SIZE, SearchExamples, evaluation_groups, languages_of, load_examples
from codebert.search.bm25 import BM25Scorer
from codebert.search.scorers import VectorScorer, group_mrr, groups_for
from codebert.search.table import render_results, write_results
from codebert.backbone import load_tokenizer

log = logging.getLogger(__name__)

Kind = Literal["bm25", "nbow", "cnn", "birnn", "selfatt"]
# CodeSearchNet's per-model overrides of batch size and learning rate.
PUBLISHED = {"nbow": (1000, 0.01), "cnn": (1000, 5e-4), "birnn": (1000, 0.01), "selfatt": (450, 5e-4)}


# --------------------------------------------------------------------------- neural encoders
class WeightedMeanPool(nn.Module):
    """CodeSearchNet's 'weighted_mean': w_t = sigmoid(v . h_t) on real tokens; sum w_t h_t / (sum w_t + 1e-8)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Linear(dim, 1, bias=False)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.gate(hidden)).squeeze(-1) * mask  # (B, T)
        return (hidden * weights.unsqueeze(-1)).sum(1) / (weights.sum(1, keepdim=True) + 1e-8)


class NBoW(nn.Module):
    def __init__(self, vocab: int, dim: int, max_tokens: int, dropout: float):
        super().__init__()
        self.embed, self.drop, self.pool = nn.Embedding(vocab, dim), nn.Dropout(dropout), WeightedMeanPool(dim)

    def forward(self, ids, mask):
        return self.pool(self.drop(self.embed(ids)), mask)


class CNN(nn.Module):
    def __init__(self, vocab: int, dim: int, max_tokens: int, dropout: float, layers: int = 3, width: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)  # learned, truncated-normal-like 0.02
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, width) for _ in range(layers))
        self.padding = ((width - 1) // 2, width // 2)  # TensorFlow's "same": the extra pad on the right
        self.drop, self.pool = nn.Dropout(dropout), WeightedMeanPool(dim)

    def forward(self, ids, mask):
        x = self.drop(self.embed(ids)) + self.positions[: ids.shape[1]]
        for i, conv in enumerate(self.convs):
            y = conv(F.pad(x.transpose(1, 2), self.padding)).transpose(1, 2)
            if i > 0:
                y = y + x  # residual from the second layer on, before the activation
            x = self.drop(torch.tanh(y))
        return self.pool(x, mask)


class BiRNN(nn.Module):
    def __init__(self, vocab: int, dim: int, max_tokens: int, dropout: float):
        super().__init__()
        self.embed, self.drop = nn.Embedding(vocab, dim), nn.Dropout(dropout)
        self.rnn = nn.LSTM(dim, 64, num_layers=2, bidirectional=True, batch_first=True)
        self.out_drop, self.pool = nn.Dropout(0.2), WeightedMeanPool(128)  # output keep rate 0.8

    def forward(self, ids, mask):
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.embed(ids)), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return self.pool(self.out_drop(out), mask)


class SelfAttention(nn.Module):
    def __init__(self, vocab: int, dim: int, max_tokens: int, dropout: float):
        super().__init__()
        # Imported here: transformers only for the self-attention baseline.
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=3, num_attention_heads=8,
                            intermediate_size=512, max_position_embeddings=512, hidden_act="gelu")
        self.bert, self.pool = BertModel(config, add_pooling_layer=False), WeightedMeanPool(128)

    def forward(self, ids, mask):
        return self.pool(self.bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


ENCODERS = {"nbow": NBoW, "cnn": CNN, "birnn": BiRNN, "selfatt": SelfAttention}


class JointEmbedding(nn.Module):
    """A query encoder and a code encoder of the same kind (no shared weights)."""

    def __init__(self, kind: str, vocab: int, dim: int, query_length: int, code_length: int, dropout: float):
        super().__init__()
        self.query = ENCODERS[kind](vocab, dim, query_length, dropout)
        self.code = ENCODERS[kind](vocab, dim, code_length, dropout)


def softmax_loss(query_vectors: torch.Tensor, code_vectors: torch.Tensor) -> torch.Tensor:
    """CodeSearchNet's 'softmax' loss: cross-entropy over in-batch dot products, the diagonal positive."""
    logits = query_vectors @ code_vectors.T
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def pad_batch(sequences: list[np.ndarray], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, min(length, max(len(s) for s in sequences)))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        body = seq[:width]
        ids[row, : len(body)] = torch.from_numpy(body.astype(np.int64))
    return ids, (ids != pad_id).float()


# ---------------------------------------------------------------------------------------- config
@dataclass
class SearchBaselineConfig:
    kind: Kind = option(help="baseline: bm25, or a CodeSearchNet joint embedding (nbow, cnn, birnn, selfatt)")
    data: Path = option(help="corpus folder (CodeSearchNet layout)")
    out: Path = option(help="folder for results.json (and model.pt of a neural baseline)")
    tokenizer: Path | None = option(None, "tokenizer folder (neural baselines): ids of its byte-level BPE")
    language: list[str] = option([], "languages (one model each; empty: all in the corpus)")
    batch_size: int = option(0, "examples per batch (0: CodeSearchNet's, per kind)")
    learning_rate: float = option(0.0, "Adam learning rate (0: CodeSearchNet's, per kind)")
    embedding_size: int = option(128, "token embedding size (CodeSearchNet: 128)")
    code_length: int = option(200, "code tokens kept (CodeSearchNet: 200)")
    query_length: int = option(30, "query tokens kept (CodeSearchNet: 30)")
    dropout: float = option(0.1, "dropout on embeddings and between layers (CodeSearchNet: keep rate 0.9)")
    max_epochs: int = option(300, "epochs at most (CodeSearchNet: 300)")
    patience: int = option(5, "stop after this many epochs without a better validation MRR (CodeSearchNet: 5)")
    max_minutes: float = option(0.0, "also stop a language's training after this many minutes (0: no limit)")
    max_records: int = option(0, "read at most this many records per language and split (0: all)")
    group_size: int = option(GROUP_SIZE, "candidates per test group (the paper: 1,000)")
    max_groups: int = option(0, "evaluate only the first N groups per language (0: all)")
    label: str = option("", "row name in the table (default: the kind)")
    seed: int = option(0, "seed of initialisation and batch order")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = []
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.kind != "bm25" and self.tokenizer is None:
            problems.append(f"--tokenizer: required for --kind {self.kind}")
        for name in ("batch_size", "max_epochs", "patience", "max_records", "max_groups", "threads"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        if self.max_epochs < 1:
            problems.append("--max-epochs: must be >= 1")
        return problems


# -------------------------------------------------------------------------------------- training
@torch.no_grad()
def _vectors(encoder: nn.Module, sequences: list[np.ndarray], length: int, pad_id: int, batch: int = 1000) -> np.ndarray:
    encoder.eval()
    out = [F.normalize(encoder(*pad_batch(sequences[i : i + batch], length, pad_id)), dim=-1) for i in range(0, len(sequences), batch)]
    encoder.train()
    return torch.cat(out).numpy()


def _valid_mrr(model: JointEmbedding, queries, codes, cfg: SearchBaselineConfig, pad_id: int) -> float:
    q = _vectors(model.query, queries, cfg.query_length, pad_id)
    c = _vectors(model.code, codes, cfg.code_length, pad_id)
    groups = evaluation_groups(len(codes), min(GROUP_SIZE, len(codes)))
    return group_mrr(VectorScorer(q, c), groups)[0]


def train_joint_embedding(cfg: SearchBaselineConfig, train: SearchExamples, valid: SearchExamples, tokenizer, lang: str) -> tuple[JointEmbedding, dict]:
    batch_size = cfg.batch_size or PUBLISHED[cfg.kind][0]
    lr = cfg.learning_rate or PUBLISHED[cfg.kind][1]
    pad_id = tokenizer.pad_token_id
    tq = encode_texts(tokenizer, [q.lower() for q in train.queries])
    tc = encode_texts(tokenizer, train.codes)
    vq = encode_texts(tokenizer, [q.lower() for q in valid.queries])
    vc = encode_texts(tokenizer, valid.codes)
    torch.manual_seed(cfg.seed)
    model = JointEmbedding(cfg.kind, len(tokenizer), cfg.embedding_size, cfg.query_length, cfg.code_length, cfg.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(cfg.seed)
    batch_size = min(batch_size, len(tq))
    steps_per_epoch = max(1, len(tq) // batch_size)
    best, best_state, since_best, epoch = -1.0, None, 0, 0
    started = time.perf_counter()
    history = []
    bar = tqdm(total=cfg.max_epochs * steps_per_epoch, desc=f"{cfg.kind} {lang}", unit="step", dynamic_ncols=True, disable=not cfg.progress)
    for epoch in range(1, cfg.max_epochs + 1):
        order = rng.permutation(len(tq))
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            q = model.query(*pad_batch([tq[i] for i in idx], cfg.query_length, pad_id))
            c = model.code(*pad_batch([tc[i] for i in idx], cfg.code_length, pad_id))
            loss = softmax_loss(q, c)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        mrr = _valid_mrr(model, vq, vc, cfg, pad_id)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_mrr": mrr})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", valid_mrr=f"{mrr:.3f}", refresh=False)
        if mrr > best:
            best, best_state, since_best = mrr, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        if since_best >= cfg.patience:
            log.info("%s %s: early stop at epoch %d", cfg.kind, lang, epoch)
            break
        if cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes:
            log.warning("%s %s: --max-minutes reached at epoch %d", cfg.kind, lang, epoch)
            break
    bar.close()
    model.load_state_dict(best_state)
    return model, {"epochs": epoch, "best_valid_mrr": best, "train_seconds": time.perf_counter() - started, "history": history}


def main(cfg: SearchBaselineConfig) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tokenizer = None
    if cfg.kind != "bm25":

        tokenizer = load_tokenizer(cfg.tokenizer)
    cfg.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"label": cfg.label or cfg.kind, "kind": cfg.kind}
    mrrs = {}
    for lang in languages_of(cfg.language, cfg.data):
        test = load_examples(cfg.data, "test", [lang])
        groups = groups_for(len(test), cfg.group_size, cfg.max_groups)
        started = time.perf_counter()
        if cfg.kind == "bm25":
            scorer = BM25Scorer(test)
        else:
            train = load_examples(cfg.data, "train", [lang], cfg.max_records)
            valid = load_examples(cfg.data, "valid", [lang], cfg.max_records)
            model, info = train_joint_embedding(cfg, train, valid, tokenizer, lang)
            torch.save(model.state_dict(), cfg.out / f"{lang}.model.pt")
            figures[f"{lang}_epochs"] = info["epochs"]
            figures[f"{lang}_best_valid_mrr"] = info["best_valid_mrr"]
            figures[f"{lang}_train_seconds"] = info["train_seconds"]
            pad_id = tokenizer.pad_token_id
            q = _vectors(model.query, encode_texts(tokenizer, [t.lower() for t in test.queries]), cfg.query_length, pad_id)
            c = _vectors(model.code, encode_texts(tokenizer, test.codes), cfg.code_length, pad_id)
            scorer = VectorScorer(q, c)  # cosine: vectors are unit length, as CodeSearchNet's test ranking
        mrrs[lang], figures[f"{lang}_queries"] = group_mrr(scorer, groups)
        figures[lang] = mrrs[lang]
        figures[f"{lang}_seconds"] = time.perf_counter() - started
    figures["languages"] = sorted(mrrs)
    figures["macro_mrr"] = float(np.mean(list(mrrs.values())))
    figures["protocol"] = {"group_size": cfg.group_size, "max_groups": cfg.max_groups, "queries_per_group": 0, "split": "test"}
    write_results(cfg.out / "results.json", figures)
    return figures


def render(figures: dict[str, Any]) -> str:
    return render_results(figures)
