"""Queries to unit vectors without the training stack: ONNX Runtime, `tokenizers` and numpy.

Answering a query should cost milliseconds, and importing `torch` and `transformers` alone costs
about 3 s on our 2-core machines (`codebert.tool.embed` loads the model through them). So `codebert
index` also writes, next to each index, the bi-encoder it used as one ONNX graph (token ids and
attention mask in, pooled unit vectors out: the same `BiEncoder.forward`), its tokenizer as a
`tokenizers` file and the input layout (`query-encoder/`), and `codebert query` / `codebert serve`
read that. Nothing here imports torch; inputs are laid out by `codebert.inputs.Layout`, the one
place every stage builds them, so the vectors are the ones `TextEncoder.encode_queries` gives (to
float rounding; tests hold them to 1e-5).

ONNX Runtime rather than a hand-written forward pass: it runs any graph torch exports (BERT,
RoBERTa, ...), with its own fused CPU kernels; it is one wheel with no dependency on torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from codebert.errors import UserError
from codebert.inputs import Layout, pad_arrays

log = logging.getLogger(__name__)

FOLDER = "query-encoder"  # inside an index folder
SPEC_FILE = "query_encoder.json"
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class QueryEncoderSpec:
    model: str  # the encoder folder the graph was exported from (the index manifest's model)
    dimension: int  # width of the unit vectors
    query_length: int  # tokens of a query input, special tokens included (as TextEncoder)
    layout: dict  # codebert.inputs.Layout as a dict: prefix, suffix, pad_id, ...

    def save(self, folder: Path) -> None:
        (folder / SPEC_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def read(folder: Path) -> QueryEncoderSpec:
        return QueryEncoderSpec(**json.loads((folder / SPEC_FILE).read_text(encoding="utf-8")))


def available(index: Path, model: str) -> bool:
    """Whether `index` holds an exported query encoder of `model` that this machine can run."""
    folder = index / FOLDER
    if not all((folder / name).is_file() for name in (SPEC_FILE, GRAPH_FILE, TOKENIZER_FILE)):
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    try:
        return QueryEncoderSpec.read(folder).model == model
    except (json.JSONDecodeError, TypeError):
        return False  # damaged: the torch path still answers


class QueryEncoder:
    """`encode_queries(texts)`: (n, dimension) float32 unit vectors, as `TextEncoder.encode_queries`."""

    def __init__(self, folder: Path, threads: int = 0):
        # Imported here: onnxruntime and tokenizers when a query is encoded; torch (embed) only for an index without the
        # export.
        import onnxruntime as ort
        from tokenizers import Tokenizer

        spec = QueryEncoderSpec.read(folder)
        self.spec, self.dimension, self.query_length = spec, spec.dimension, spec.query_length
        layout = dict(spec.layout)
        self.layout = Layout(**{k: tuple(v) if isinstance(v, list) else v for k, v in layout.items()})
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # The layout adds the special tokens and cuts; the tokenizer file must do neither itself.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Basic graph optimisations only: the full set makes the first run of a session (the only
        # one `codebert query` has) several times slower, for no gain over one short query.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            self.session = ort.InferenceSession(str(folder / GRAPH_FILE), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a damaged graph
            raise UserError(f"{folder / GRAPH_FILE}: cannot be loaded ({exc}); index again to rewrite it") from None

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = [self.layout.single(ids, self.query_length) for ids in self.token_ids(texts)]
        ids, mask = pad_arrays(rows, self.layout.pad_id)
        (vectors,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.ascontiguousarray(vectors, dtype=np.float32)


def open_encoder(index: Path, model: str, threads: int = 0, engine: str = "auto"):
    """The lean encoder of `index` if it has one (engine auto or onnx), else the torch one (an index
    made before, no onnxruntime installed, or engine torch): either has `encode_queries` and `dimension`."""
    if engine != "torch" and available(index, model):
        return QueryEncoder(index / FOLDER, threads)
    if engine == "onnx":
        raise UserError(f"{index}: no exported query encoder of {model} (or no onnxruntime); index again, or use --engine torch")
    log.info("%s: no exported query encoder; loading %s with torch", index, model)
    # Imported here: onnxruntime and tokenizers when a query is encoded; torch (embed) only for an index without the
    # export.
    from codebert.tool.embed import TextEncoder

    return TextEncoder(model, threads=threads)
