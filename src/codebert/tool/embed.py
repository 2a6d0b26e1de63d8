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

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codebert.backbone import load_tokenizer, max_tokens, resolve
from codebert.errors import UserError
from codebert.inputs import Layout
from codebert.inputs import encode_texts
from codebert.search.models import SearchSpec, load_bi_encoder, pooling_of, single_inputs
from codebert.training.loop import resolve_precision
from codebert.tool.query_encoder import GRAPH_FILE, TOKENIZER_FILE, QueryEncoderSpec
from dataclasses import asdict

log = logging.getLogger(__name__)


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
    def __init__(self, model: str | Path, max_length: int = 0, threads: int = 0, precision: str = "fp32"):
        # Imported here: transformers only when an encoder is loaded.
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
        # fp32 by default: a query's vector is then the same whatever the machine (and the lean
        # query path's ONNX graph gives it to 1e-5); bf16 is asked for where speed counts more.
        # auto: bf16 where this CPU has bf16 matrix instructions (the training loop's own rule; the
        # encoder always runs on the CPU, whatever GPU the machine has).
        self.precision = resolve_precision(precision, torch.device("cpu"))
        self.forward = self.model  # what _encode_ids runs: the module, or its trace (`trace`)
        # Batches padded to a multiple of this many tokens (masked, so the vectors do not change):
        # a server sees few distinct shapes, so oneDNN's per-shape kernels are made once and kept.
        self.pad_multiple = 1

    @torch.inference_mode()
    def _encode_ids(self, sequences: list[np.ndarray], length: int, batch_size: int, bar: tqdm | None = None) -> np.ndarray:
        order = np.argsort([len(s) for s in sequences], kind="stable")
        out = np.empty((len(sequences), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = single_inputs([sequences[i] for i in idx], length, self.layout)
            extra = -ids.shape[1] % self.pad_multiple
            if extra:
                ids = torch.nn.functional.pad(ids, (0, extra), value=self.layout.pad_id)
                mask = torch.nn.functional.pad(mask, (0, extra), value=0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out[idx] = self.forward(ids, mask).float().numpy()
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

    @torch.inference_mode()
    def trace(self) -> bool:
        """Run a TorchScript trace of the model, frozen (constants folded, oneDNN fusions), in place
        of the module: about 1.6x the queries/s of eager mode for a server's short batches, since
        per-layer Python overhead dominates them. The trace is checked against the module on
        inputs of other shapes than the one traced; False (eager mode kept) if it differs."""
        def inputs(rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
            sequences = [np.arange(5, 5 + max(1, length - r), dtype=np.int64) for r in range(rows)]
            return single_inputs(sequences, self.query_length, self.layout)

        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")
        try:
            with warnings.catch_warnings(), autocast:
                warnings.simplefilter("ignore")  # the tracer's notes on Python values it records
                traced = torch.jit.freeze(torch.jit.trace(self.model, inputs(4, 12), check_trace=False, strict=False))
                for rows, length in ((1, 3), (7, 30), (16, 9)):
                    ids, mask = inputs(rows, length)
                    if not torch.allclose(traced(ids, mask).float(), self.model(ids, mask).float(), atol=1e-4):
                        log.warning("the traced encoder differs from the model on other shapes: eager mode kept")
                        return False
        except Exception as exc:  # noqa: BLE001 -- a model the tracer cannot follow still runs eagerly
            log.warning("the encoder could not be traced (%s): eager mode kept", exc)
            return False
        self.forward = traced
        return True

    def export_query_encoder(self, out: Path, model_id: str) -> bool:
        """Write the lean query path's files (`codebert.tool.query_encoder`) to `out`: this model (known to
        the index as `model_id`) as an
        ONNX graph, its tokenizer as a `tokenizers` file, the layout and query length. False (and
        a logged reason) when it cannot: a tokenizer with no fast backend, an export failure."""


        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            log.warning("no lean query encoder: the tokenizer of %s has no `tokenizers` backend", self.folder)
            return False
        out.mkdir(parents=True, exist_ok=True)
        example = single_inputs([np.arange(5, 13, dtype=np.int64)] * 2, self.query_length, self.layout)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on tracing are not the user's business
                # The TorchScript-based exporter (dynamo=False): it needs nothing beyond torch, and one
                # file holds graph and weights. Batch and length are dynamic.
                torch.onnx.export(
                    self.model, example, str(out / GRAPH_FILE), input_names=["input_ids", "attention_mask"],
                    output_names=["vectors"], opset_version=17, dynamo=False,
                    dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                  "vectors": {0: "batch"}},
                )
        except Exception as exc:  # noqa: BLE001 -- any exporter failure leaves the torch path, which works
            log.warning("no lean query encoder (ONNX export failed: %s); queries will load torch", exc)
            return False
        backend.save(str(out / TOKENIZER_FILE))
        layout = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.layout).items()}
        QueryEncoderSpec(model=model_id, dimension=self.dimension, query_length=self.query_length,
                         layout=layout).save(out)
        return True
