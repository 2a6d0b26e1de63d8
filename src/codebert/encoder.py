"""Text to unit vectors with any Hugging Face encoder folder, for the search index and queries.

The folder says how to pool: our bi-encoder's `search_model.json` (mean or `<s>`), else a
sentence-transformers folder's `1_Pooling/config.json`, else mean pooling. Every folder loads
through `codebert.backbone` (ours, or any BERT/RoBERTa-family encoder such as sentence-transformers'
MiniLM) with its own tokenizer. Inputs are `<s> text </s>` (`[CLS] text [SEP]` for BERT-style
tokenizers, `codebert.inputs.Layout`) cut to the model's window; a text longer than the
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

from codebert.backbone import load_tokenizer, max_tokens, resolve
from codebert.errors import UserError
from codebert.inputs import Layout
from codebert.pretrain_data import encode_texts
from codebert.search.models import SearchSpec, load_bi_encoder, single_inputs

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


class TextEncoder:
    def __init__(self, model: str | Path, max_length: int = 0, threads: int = 0):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        folder = Path(resolve(model))
        if not (folder / "config.json").is_file():
            raise UserError(f"{model}: not a model folder (no config.json)")
        self.folder = folder
        self.tokenizer = load_tokenizer(folder)
        self.model = load_bi_encoder(folder, pooling_of(folder)).eval()
        window = max_tokens(self.model.encoder.config, self.tokenizer)
        # Each input is wrapped in the tokenizer's own special tokens and padded with its pad token.
        self.layout = Layout.of(self.tokenizer)
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
            ids, mask = single_inputs([sequences[i] for i in idx], length, self.layout)
            out[idx] = self.model(ids, mask).float().numpy()
            if bar is not None:
                bar.update(len(idx))
        return out

    def encode_code(self, texts: list[str], batch_size: int = 64, progress: bool = False, split_long: bool = True) -> np.ndarray:
        """Unit vectors of code texts; long ones pooled over overlapping windows (`split_long`),
        or cut to the first window (what sentence-transformers does)."""
        ids = encode_texts(self.tokenizer, texts)
        pieces, owner = [], []
        body = self.max_length - self.layout.single_overhead  # text tokens per input, special tokens aside
        for i, seq in enumerate(ids):
            for window in windows(seq, body) if split_long else [seq[:body]]:
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
