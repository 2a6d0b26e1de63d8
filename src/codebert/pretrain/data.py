"""Pre-training data: tokenised NL-code pairs and unimodal code, and their batches laid out as pairs.

The text of each side is CodeBERT's: doc tokens and code tokens joined by spaces (corpus.jsonl's nl_text,
code_text). A unimodal function is laid out as a pair with an empty NL segment
(`<s> </s> CODE </s>` in CodeBERT's layout), so that both kinds share one input format; the
special tokens are the tokenizer's own (`codebert.inputs.Layout`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codebert.corpus.jsonl import UNIMODAL, ReadReport, code_text, iter_corpus, nl_text
from codebert.errors import UserError
from codebert.pretrain.objectives import CODE, NL
from codebert.inputs import ROBERTA, Layout, encode_texts

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
    input_ids: torch.Tensor  # (B, T) PREFIX NL MIDDLE CODE SUFFIX <pad>... (<s> NL </s> CODE </s> for RoBERTa)
    attention_mask: torch.Tensor  # (B, T) 1 for tokens, 0 for padding
    segments: torch.Tensor  # (B, T) 0 special/pad, 1 NL, 2 code
    unimodal: torch.Tensor  # (B,) bool
    token_type_ids: torch.Tensor | None = None  # (B, T) 1 on CODE and its closing token where the family has segment types (BERT)

    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(corpus: EncodedCorpus, indices: list[int] | np.ndarray, max_length: int, layout: Layout = ROBERTA) -> Batch:
    """Lay out examples as pairs, truncated longest-first, padded to the longest in the batch."""
    pairs = [layout.pair(corpus.nl[i].tolist(), corpus.code[i].tolist(), max_length) for i in indices]
    padded = layout.pad_pairs(pairs)
    segments = torch.zeros_like(padded.input_ids)
    for row, pair in enumerate(pairs):
        segments[row, pair.nl] = NL
        segments[row, pair.code] = CODE
    unimodal = torch.from_numpy(corpus.unimodal[np.asarray(indices)])
    return Batch(padded.input_ids, padded.attention_mask, segments, unimodal, padded.token_type_ids)
