"""The two code-search models, saved as Hugging Face folders.

* Cross-encoder (the paper's, §4.1): the backbone's `...ForSequenceClassification` with two classes
  on the first token's representation of the pair, laid out as CodeBERT's `codesearch/utils.py`
  lays it out: the NL cut to 50 tokens, then `<s> NL </s> CODE </s>` (one separator; BERT:
  `[CLS] NL [SEP] CODE [SEP]` with token type 1 on `CODE [SEP]`) truncated longest-first to the
  window; the score of a pair is the logit of the positive class, as CodeBERT's
  `run_classifier.py` writes it and `mrr.py` reads it.
* Bi-encoder (beyond the paper): one shared encoder for queries `<s> NL </s>` and code
  `<s> CODE </s>` (the tokenizer's own single layout), pooled (mean over tokens, or the first
  token) and L2-normalised; score = cosine. The folder is a plain encoder folder (AutoModel opens
  it) plus the sentence-transformers module files, so `SentenceTransformer(folder)` encodes
  exactly as we do.
Any BERT- or RoBERTa-family folder is a starting point (`codebert.backbone`); inputs are laid
out by `codebert.inputs.Layout`.

Every folder also holds `search_model.json` ({"mode", "pooling", "max_length", "query_length",
"pair_layout", "nl_length", "ranking", "fusion", "lexical_weight"}), which tells `codebert search evaluate` and `codebert index` how to use it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from codebert.backbone import load_encoder, load_sequence_classifier
from codebert.io import atomic_write
from codebert.inputs import ROBERTA, Layout, PairBatch, PairStyle

log = logging.getLogger(__name__)

SEARCH_FILE = "search_model.json"
Mode = Literal["cross", "bi"]
Pooling = Literal["mean", "cls"]


@dataclass
class SearchSpec:
    mode: Mode  # cross: pair classifier; bi: separate query and code vectors
    pooling: Pooling = "mean"  # bi only: how token vectors become one vector
    max_length: int = 200  # cross: tokens of the whole pair; bi: tokens of a code input
    query_length: int = 64  # bi only: tokens of a query input
    # cross only; the defaults are what folders written before these fields were trained with
    pair_layout: PairStyle = "tokenizer"  # how a pair is laid out (inputs.PairStyle); new cross-encoders: codebert
    nl_length: int = 0  # NL tokens kept before the pair is truncated (0: not cut); new cross-encoders: 50, as utils.py
    # bi only: the ranking `codebert search hybrid --save` chose on valid, the tool's default for this model
    ranking: str = "dense"  # dense | lexical | hybrid
    fusion: str = "sum"  # hybrid: sum | rrf (search/fusion.py)
    lexical_weight: float = 0.0  # hybrid sum: BM25's share of the fused score

    def save(self, folder: Path) -> None:
        with atomic_write(folder / SEARCH_FILE) as f:
            f.write(json.dumps(asdict(self), indent=2) + "\n")

    @staticmethod
    def read(folder: str | Path) -> SearchSpec | None:
        path = Path(folder) / SEARCH_FILE
        if not path.is_file():
            return None
        return SearchSpec(**json.loads(path.read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------------- cross
def load_cross_encoder(path: str | Path, from_scratch: bool = False, dropout: float | None = None):
    """A pair classifier from a pre-trained checkpoint of any supported family (its classifier newly
    initialised), from a fine-tuned cross-encoder, or with `from_scratch` a random one of the same
    shape ("no pre-training" in the paper's tables)."""
    return load_sequence_classifier(path, num_labels=2, from_scratch=from_scratch, dropout=dropout)


def cross_layout(tokenizer, spec: SearchSpec) -> Layout:
    """The layout a cross-encoder's pairs are built in: its tokenizer's tokens, its pair style."""
    return Layout.of(tokenizer, spec.pair_layout)


def cross_inputs(pairs: list[tuple[np.ndarray, np.ndarray]], spec: SearchSpec, layout: Layout = ROBERTA) -> PairBatch:
    """A batch of NL-code pairs as `spec` lays them out: the NL cut to `nl_length`, the pair to `max_length`."""
    return layout.pairs(pairs, spec.max_length, spec.nl_length)


def positive_logit(model, pairs: PairBatch, device) -> torch.Tensor:
    """The pair score of the paper's protocol: the logit of class 1 (relevant)."""
    return model(**pairs.to(device)).logits[:, 1]


# ---------------------------------------------------------------------------------------- bi
class BiEncoder(nn.Module):
    """A shared encoder whose pooled, L2-normalised output embeds queries and code alike."""

    def __init__(self, encoder: nn.Module, pooling: Pooling = "mean"):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(pooled.float(), dim=-1)


def load_bi_encoder(path: str | Path, pooling: Pooling = "mean", from_scratch: bool = False, dropout: float | None = None) -> BiEncoder:
    """A bi-encoder from any BERT- or RoBERTa-family folder (ours pre-trained or fine-tuned, roberta-base,
    the packaged MiniLM, ...)."""
    return BiEncoder(load_encoder(path, from_scratch=from_scratch, dropout=dropout), pooling)


def single_inputs(sequences: list[np.ndarray], max_length: int, layout: Layout = ROBERTA) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `<s> TEXT </s>` inputs (the layout's own tokens), cut to `max_length` tokens."""
    return layout.singles(sequences, max_length)


def save_bi_encoder(model: BiEncoder, folder: Path, spec: SearchSpec) -> None:
    """The encoder as a plain encoder folder (AutoModel opens it), plus sentence-transformers' module description."""
    model.encoder.save_pretrained(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": spec.max_length, "do_lower_case": False}) + "\n")
    pooling = {
        "word_embedding_dimension": model.encoder.config.hidden_size,
        "pooling_mode_cls_token": spec.pooling == "cls",
        "pooling_mode_mean_tokens": spec.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (folder / "2_Normalize").mkdir(exist_ok=True)
    spec.save(folder)


def info_nce(query_vectors: torch.Tensor, code_vectors: torch.Tensor, temperature: float, symmetric: bool = False) -> torch.Tensor:
    """In-batch contrastive loss: query i's positive is code i, every other code is a negative.

    `code_vectors` may hold more rows than queries (hard negatives appended after the positives).
    Cross-entropy over cosine similarities / temperature (vectors are already unit length); also
    known as InfoNCE, sentence-transformers' MultipleNegativesRankingLoss. `symmetric`: the mean of
    that and the code -> query direction (code i's positive is query i, the other queries its
    negatives; hard-negative codes have no query and take no part), as sentence-transformers'
    MultipleNegativesSymmetricRankingLoss.
    """
    logits = query_vectors @ code_vectors.T / temperature  # (B, B + extra)
    targets = torch.arange(len(query_vectors), device=logits.device)
    forward = F.cross_entropy(logits, targets)
    if not symmetric:
        return forward
    backward = F.cross_entropy(logits[:, : len(query_vectors)].T, targets)  # (B codes, B queries)
    return (forward + backward) / 2


def pooling_of(folder: Path) -> str:
    """How an encoder folder pools token vectors: our bi-encoder's `search_model.json`, else a
    sentence-transformers folder's `1_Pooling/config.json` (the first token or the mean), else mean."""
    spec = SearchSpec.read(folder)
    if spec is not None:
        return spec.pooling
    st_pooling = folder / "1_Pooling" / "config.json"
    if st_pooling.is_file():
        config = json.loads(st_pooling.read_text())
        return "cls" if config.get("pooling_mode_cls_token") else "mean"
    return "mean"
