"""Text to unit vectors with any Hugging Face encoder folder, for the search index and queries.

The folder says how to pool: our bi-encoder's `search_model.json` (mean or `<s>`), else a
sentence-transformers folder's `1_Pooling/config.json`, else mean pooling. Our folders (RoBERTa)
load as ours do everywhere; any other architecture (e.g. a BERT-style sentence-transformers model)
loads through `AutoModel` with its own tokenizer and special tokens. Inputs are `<s> text </s>`
(`[CLS] text [SEP]` for BERT-style tokenizers) cut to the model's window; a text longer than the
window is split into overlapping windows (half a window apart) whose unit vectors are averaged
and normalised again, so the end of a long function counts as much as its start.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codebert.errors import UserError
from codebert.modeling import check_model_folder, quiet_transformers
from codebert.pretrain_data import encode_texts
from codebert.search.models import BiEncoder, SearchSpec, load_bi_encoder, single_inputs

log = logging.getLogger(__name__)


def pooling_of(folder: Path) -> str:
    spec = SearchSpec.read(folder)
    if spec is not None:
        return spec.pooling
    st_pooling = folder / "1_Pooling" / "config.json"
    if st_pooling.is_file():
        config = json.loads(st_pooling.read_text())
        return "cls" if config.get("pooling_mode_cls_token") else "mean"
    return "mean"


def windows(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """Overlapping windows of `size` tokens, `size // 2` apart, covering every token."""
    if len(ids) <= size:
        return [ids]
    stride = max(1, size // 2)
    starts = list(range(0, len(ids) - size + 1, stride))
    if starts[-1] + size < len(ids):
        starts.append(len(ids) - size)
    return [ids[s : s + size] for s in starts]


def _first_id(*ids: int | None) -> int:
    for token_id in ids:
        if token_id is not None:
            return token_id
    raise UserError("the tokenizer has no start/end token to wrap inputs in")


def _load_other_encoder(folder: Path):
    """Tokenizer and pooled encoder of a folder that is not RoBERTa-shaped (e.g. sentence-transformers' MiniLM)."""
    from transformers import AutoModel, AutoTokenizer

    check_model_folder(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        with quiet_transformers():
            encoder = AutoModel.from_pretrained(str(folder), use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load an encoder from {str(folder)!r}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        raise UserError(f"{folder}: the tokenizer has no padding token")
    return tokenizer, BiEncoder(encoder, pooling_of(folder)).eval()


class TextEncoder:
    def __init__(self, model: str | Path, max_length: int = 0, threads: int = 0):
        from transformers.utils import logging as hf_logging

        from codebert.tokenizer import load_tokenizer

        hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise UserError(f"{model}: not a model folder (no config.json)")
        self.folder = folder
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        if model_type == "roberta":
            self.tokenizer = load_tokenizer(folder)
            self.model = load_bi_encoder(folder, pooling_of(folder)).eval()
            window = self.model.encoder.config.max_position_embeddings - 2  # RoBERTa positions start at padding_idx + 1
        else:
            self.tokenizer, self.model = _load_other_encoder(folder)
            window = min(self.model.encoder.config.max_position_embeddings, self.tokenizer.model_max_length)
        # Each input is wrapped in the tokenizer's own start and end tokens and padded with its pad token.
        self.specials = {"pad_id": self.tokenizer.pad_token_id,
                         "cls_id": _first_id(self.tokenizer.cls_token_id, self.tokenizer.bos_token_id),
                         "sep_id": _first_id(self.tokenizer.sep_token_id, self.tokenizer.eos_token_id)}
        spec = SearchSpec.read(folder)
        self.max_length = min(max_length or (spec.max_length if spec else 256), window)
        self.query_length = min(spec.query_length if spec else 64, window)
        self.dimension = self.model.encoder.config.hidden_size

    @torch.inference_mode()
    def _encode_ids(self, sequences: list[np.ndarray], length: int, batch_size: int, bar: tqdm | None = None) -> np.ndarray:
        order = np.argsort([len(s) for s in sequences], kind="stable")
        out = np.empty((len(sequences), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = single_inputs([sequences[i] for i in idx], length, **self.specials)
            out[idx] = self.model(ids, mask).float().numpy()
            if bar is not None:
                bar.update(len(idx))
        return out

    def encode_code(self, texts: list[str], batch_size: int = 64, progress: bool = False, split_long: bool = True) -> np.ndarray:
        """Unit vectors of code texts; long ones pooled over overlapping windows (`split_long`),
        or cut to the first window (what sentence-transformers does)."""
        ids = encode_texts(self.tokenizer, texts)
        pieces, owner = [], []
        for i, seq in enumerate(ids):
            for window in windows(seq, self.max_length - 2) if split_long else [seq[: self.max_length - 2]]:
                pieces.append(window)
                owner.append(i)
        bar = tqdm(total=len(pieces), desc="encode", unit="input", dynamic_ncols=True, disable=not progress)
        vectors = self._encode_ids(pieces, self.max_length, batch_size, bar)
        bar.close()
        pooled = np.zeros((len(texts), self.dimension), dtype=np.float32)
        np.add.at(pooled, np.asarray(owner), vectors)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode_ids(encode_texts(self.tokenizer, texts), self.query_length, 64)
