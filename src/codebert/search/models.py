"""The two code-search models, saved as Hugging Face folders.

* Cross-encoder (the paper's, §4.1): `RobertaForSequenceClassification` with two classes on the
  `<s>` representation of `<s> NL </s></s> CODE </s>`; the score of a pair is the logit of the
  positive class, as CodeBERT's `run_classifier.py` writes it and `mrr.py` reads it.
* Bi-encoder (beyond the paper): one shared RoBERTa encoder for queries `<s> NL </s>` and code
  `<s> CODE </s>`, pooled (mean over tokens, or `<s>`) and L2-normalised; score = cosine.
  The folder is a plain `RobertaModel` (AutoModel opens it) plus the sentence-transformers module
  files, so `SentenceTransformer(folder)` encodes exactly as we do.

Every folder also holds `search_model.json` ({"mode", "pooling", "max_length", "query_length"}),
which tells `codebert search evaluate` and `codebert index` how to use it.
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
from transformers import AutoConfig, RobertaForSequenceClassification, RobertaModel

from codebert.corpus.jsonl import atomic_write
from codebert.errors import UserError
from codebert.modeling import check_model_folder, quiet_transformers
from codebert.tokenizer import build_pair

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
def load_cross_encoder(path: str | Path, from_scratch: bool = False, dropout: float | None = None) -> RobertaForSequenceClassification:
    """A pair classifier from a pre-trained checkpoint (its classifier newly initialised),
    from a fine-tuned cross-encoder, or with `from_scratch` a random one of the same shape
    ("no pre-training" in the paper's tables)."""
    check_model_folder(path)
    overrides = {"num_labels": 2}
    if dropout is not None:
        overrides.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    try:
        if from_scratch:
            config = AutoConfig.from_pretrained(str(path), **overrides)
            config.architectures = ["RobertaForSequenceClassification"]
            return RobertaForSequenceClassification(config)
        with quiet_transformers():
            model, info = RobertaForSequenceClassification.from_pretrained(
                str(path), use_safetensors=True, output_loading_info=True, **overrides
            )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a model from {str(path)!r}: {str(exc).splitlines()[0]}") from None
    missing = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    if missing:
        log.info("newly initialised (not in %s): %s", path, ", ".join(missing))
    return model


def cross_inputs(pairs: list[tuple[np.ndarray, np.ndarray]], max_length: int, pad_id: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `<s> NL </s></s> CODE </s>` pairs, truncated longest-first."""
    encoded = [build_pair(nl.tolist(), code.tolist(), max_length).input_ids for nl, code in pairs]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
    return ids, (ids != pad_id).long()


def positive_logit(model: RobertaForSequenceClassification, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The pair score of the paper's protocol: the logit of class 1 (relevant)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 1]


# ---------------------------------------------------------------------------------------- bi
class BiEncoder(nn.Module):
    """A shared RoBERTa encoder whose pooled, L2-normalised output embeds queries and code alike."""

    def __init__(self, encoder: RobertaModel, pooling: Pooling = "mean"):
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
    """A bi-encoder from any RoBERTa-shaped folder (ours pre-trained or fine-tuned, roberta-base, ...)."""
    check_model_folder(path)
    overrides = {}
    if dropout is not None:
        overrides.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    try:
        if from_scratch:
            return BiEncoder(RobertaModel(AutoConfig.from_pretrained(str(path), **overrides), add_pooling_layer=False), pooling)
        with quiet_transformers():
            encoder = RobertaModel.from_pretrained(str(path), use_safetensors=True, add_pooling_layer=False, **overrides)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a model from {str(path)!r}: {str(exc).splitlines()[0]}") from None
    return BiEncoder(encoder, pooling)


def single_inputs(sequences: list[np.ndarray], max_length: int, pad_id: int = 1, cls_id: int = 0, sep_id: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `<s> TEXT </s>` inputs, cut to `max_length` tokens."""
    width = min(max(len(s) for s in sequences) + 2, max_length)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        body = seq[: max_length - 2].tolist()
        ids[row, : len(body) + 2] = torch.tensor([cls_id, *body, sep_id])
    return ids, (ids != pad_id).long()


def save_bi_encoder(model: BiEncoder, folder: Path, spec: SearchSpec) -> None:
    """The encoder as a RobertaModel folder, plus sentence-transformers' module description."""
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


def info_nce(query_vectors: torch.Tensor, code_vectors: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch contrastive loss: query i's positive is code i, every other code is a negative.

    `code_vectors` may hold more rows than queries (hard negatives appended after the positives).
    Cross-entropy over cosine similarities / temperature (vectors are already unit length).
    """
    logits = query_vectors @ code_vectors.T / temperature  # (B, B + extra)
    return F.cross_entropy(logits, torch.arange(len(query_vectors), device=logits.device))
