"""Pre-training data: tokenised NL-code pairs and unimodal code, in length-bucketed, resumable batches.

The text of each side is CodeBERT's: doc tokens and code tokens joined by spaces (tokenizer.nl_text,
tokenizer.code_text). A unimodal function is laid out as a pair with an empty NL segment
(`<s> </s></s> CODE </s>` in RoBERTa's layout), so that both kinds share one input format; the
layout is the tokenizer's own (`codebert.inputs.Layout`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codebert.corpus.jsonl import UNIMODAL, ReadReport, iter_corpus
from codebert.errors import UserError
from codebert.objectives import CODE, NL
from codebert.inputs import ROBERTA, Layout
from codebert.tokenizer import code_text, nl_text

log = logging.getLogger(__name__)


@dataclass
class EncodedCorpus:
    """Token ids of every example, NL and code kept apart so masking knows the segments."""

    nl: list[np.ndarray]  # NL ids per example (empty for unimodal code)
    code: list[np.ndarray]  # code ids per example
    unimodal: np.ndarray  # (N,) bool: example is unimodal code (its code was counted by the code generator)

    def __len__(self) -> int:
        return len(self.code)

    def lengths(self, max_length: int) -> np.ndarray:
        nl = np.array([len(x) for x in self.nl])
        code = np.array([len(x) for x in self.code])
        return np.minimum(nl + code + 4, max_length)  # a sorting key for batching: RoBERTa's 4 special tokens


def encode_texts(tokenizer, texts: list[str], batch: int = 2048) -> list[np.ndarray]:
    """Token ids of each text, without special tokens (the layout adds them)."""
    out: list[np.ndarray] = []
    for i in range(0, len(texts), batch):
        # verbose=False: long functions are expected here; build_pair truncates them later.
        encoded = tokenizer(texts[i : i + batch], add_special_tokens=False, verbose=False)["input_ids"]
        out.extend(np.asarray(ids, dtype=np.int32) for ids in encoded)
    return out


def encode_corpus(
    data: Path, tokenizer, split: str, languages: list[str] | None, include_unimodal: bool, max_records: int = 0,
    code_only: bool = False,
) -> EncodedCorpus:
    """Tokenise one split (train, valid or test) of a corpus, plus unimodal code if asked.

    `code_only` drops the docs: every example is then laid out as unimodal code is.
    """
    nl_texts, code_texts, unimodal = [], [], []
    splits = (split, UNIMODAL) if include_unimodal else (split,)
    for _, name, record in iter_corpus(data, splits, languages or None, max_records, ReadReport()):
        is_unimodal = name == UNIMODAL
        nl_texts.append("" if is_unimodal or code_only else nl_text(record))
        code_texts.append(code_text(record))
        unimodal.append(is_unimodal)
    if not code_texts:
        raise UserError(f"{data}: no {split} records{' or unimodal code' if include_unimodal else ''} to train on")
    return EncodedCorpus(encode_texts(tokenizer, nl_texts), encode_texts(tokenizer, code_texts), np.array(unimodal, dtype=bool))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) PREFIX NL MIDDLE CODE SUFFIX <pad>... (<s> NL </s></s> CODE </s> for RoBERTa)
    attention_mask: torch.Tensor  # (B, T) 1 for tokens, 0 for padding
    segments: torch.Tensor  # (B, T) 0 special/pad, 1 NL, 2 code
    unimodal: torch.Tensor  # (B,) bool

    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(corpus: EncodedCorpus, indices: list[int] | np.ndarray, max_length: int, layout: Layout = ROBERTA) -> Batch:
    """Lay out examples as pairs, truncated longest-first, padded to the longest in the batch."""
    pairs = [layout.pair(corpus.nl[i].tolist(), corpus.code[i].tolist(), max_length) for i in indices]
    ids, mask = layout.pad([p.input_ids for p in pairs])
    segments = torch.zeros_like(ids)
    for row, pair in enumerate(pairs):
        segments[row, pair.nl] = NL
        segments[row, pair.code] = CODE
    return Batch(ids, mask, segments, torch.from_numpy(corpus.unimodal[np.asarray(indices)]))


class BucketedBatches:
    """An endless, resumable stream of batches of similar lengths.

    Each epoch: indices shuffled with (seed, epoch), cut into pools of `pool` batches, each pool
    sorted by length and cut into batches, and the batches shuffled again. The stream position is
    (epoch, batch index), so `state_dict()` after step N and `load_state_dict` resume exactly.
    With several processes (DDP), process r takes batches r, r + world, r + 2 * world, ...
    """

    def __init__(
        self, corpus: EncodedCorpus, batch_size: int, max_length: int, seed: int, rank: int = 0, world: int = 1,
        pool: int = 50, collate_fn=collate,
    ):
        if len(corpus) < batch_size * world:
            raise UserError(f"only {len(corpus)} examples for batches of {batch_size} on {world} process(es)")
        self.corpus, self.batch_size, self.max_length = corpus, batch_size, max_length
        self.collate_fn = collate_fn  # (corpus, indices, max_length) -> batch; any corpus with len() and lengths()
        self.seed, self.rank, self.world, self.pool = seed, rank, world, pool
        self.lengths = corpus.lengths(max_length)
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.corpus))
        chunk = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part) - self.batch_size + 1, self.batch_size)]
        rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.world  # every process gets as many batches
        return batches[self.rank : usable : self.world]

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        indices = self._batches[self.position]
        self.position += 1
        return self.collate_fn(self.corpus, indices, self.max_length)

    def batches_per_epoch(self) -> int:
        return len(self._batches)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches(self.epoch)
