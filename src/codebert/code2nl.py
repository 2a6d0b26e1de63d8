"""`codebert code2nl finetune|generate|evaluate`: code-to-documentation generation (paper §4.3-4.4).

The model is CodeBERT's `code2nl` Seq2Seq: the pre-trained encoder reads the code tokens; a
decoder writes the doc. Conventions of the reference (CodeBERT/code2nl/model.py, run.py):
  * decoder: 6 Transformer layers of the encoder's width and heads (`nn.TransformerDecoder`);
  * target embeddings are the encoder's embedding module (words and positions), and the output
    projection is tied to the word embeddings after a dense + tanh layer;
  * targets are `<s> doc </s>`, the loss is cross-entropy on the shifted target, padding ignored;
  * lengths 256 (source) and 64 (target); lr 5e-5, batch 64; beam search of size 10 whose
    hypotheses are ranked by the sum of token log-probabilities (no length penalty) and end at
    `</s>`; validation by smoothed BLEU-4 (`codebert bleu`), the best kept in best/.
Data: CodeSearchNet jsonl (code_tokens -> docstring_tokens), or the CodeNN format (`--format
codenn`: tab-separated id, question id, title, code, label; the title is the target).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from codebert.backbone import position_offset
from codebert.bleu import corpus_bleu, split_punctuation
from codebert.config import option, to_dict
from codebert.corpus.jsonl import ReadReport, atomic_write, iter_corpus
from codebert.errors import UserError
from codebert.inputs import ROBERTA, Layout, pad_sequences
from codebert.pretrain_data import BucketedBatches, encode_texts
from codebert.report import format_table, numeric_table
from codebert.train_loop import LoopConfig, Trainer, load_weights, read_weights, seed_everything, setup_distributed, steps_for_epochs

log = logging.getLogger(__name__)

SPEC_FILE = "code2nl.json"
DECODER_FILE = "decoder.safetensors"


# --------------------------------------------------------------------------------------- data
@dataclass
class Pairs:
    ids: list[str]  # example ids (CodeNN ids, or "<language>-<n>")
    sources: list[str]  # code text
    targets: list[list[str]]  # reference docs (several for CodeNN evaluation files)


def read_csn(data: Path, split: str, languages: list[str], max_records: int) -> Pairs:
    out = Pairs([], [], [])
    counters: dict[str, int] = {}
    for lang, _, record in iter_corpus(data, (split,), languages or None, max_records, ReadReport()):
        n = counters[lang] = counters.get(lang, 0) + 1
        out.ids.append(f"{lang}-{n - 1}")
        out.sources.append(" ".join(record["code_tokens"]))
        out.targets.append([" ".join(record["docstring_tokens"])])
    if not out.ids:
        raise UserError(f"{data}: no {split} records")
    return out


def read_codenn(path: Path, references: Path | None = None, max_records: int = 0) -> Pairs:
    """CodeNN lines: id, question id, title, code, label (tab-separated); `references`: id<TAB>title lines."""
    out = Pairs([], [], [])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    skipped = 0
    for line in lines:
        cols = line.split("\t")
        if len(cols) < 4:
            skipped += 1
            continue
        out.ids.append(cols[0])
        out.targets.append([cols[2]])
        out.sources.append(cols[3])
        if max_records and len(out.ids) >= max_records:
            break
    if skipped:
        log.warning("%s: %d lines without the 5 CodeNN columns skipped", path, skipped)
    if references is not None:
        refs: dict[str, list[str]] = {}
        for line in references.read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                rid, text = line.split("\t", 1)
                refs.setdefault(rid, []).append(text)
        out.targets = [refs.get(i, t) for i, t in zip(out.ids, out.targets)]
    if not out.ids:
        raise UserError(f"{path}: no CodeNN lines (id, question id, title, code, label)")
    return out


@dataclass
class EncodedPairs:
    sources: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.sources)

    def lengths(self, max_length: int) -> np.ndarray:
        return np.minimum(np.array([len(s) for s in self.sources]) + 2, max_length)


@dataclass
class Seq2SeqBatch:
    source_ids: torch.Tensor  # (B, S) <s> code </s>
    source_mask: torch.Tensor
    target_ids: torch.Tensor  # (B, T) <s> doc </s>
    target_mask: torch.Tensor

    def num_tokens(self) -> int:
        return int(self.source_mask.sum() + self.target_mask.sum())


def wrap(ids: np.ndarray, max_length: int, layout: Layout = ROBERTA) -> list[int]:
    """A source or target in the tokenizer's single layout (`<s> text </s>`, `[CLS] text [SEP]`)."""
    return layout.single(ids, max_length)


def bos_eos(layout: Layout) -> tuple[int, int]:
    """The tokens a target starts and ends with: the first and last special token of a single input."""
    return layout.prefix[0], layout.suffix[-1]


# -------------------------------------------------------------------------------------- model
@dataclass
class Seq2SeqSpec:
    decoder_layers: int = 6  # Transformer decoder layers (the paper: 6)
    max_source_length: int = 256  # code tokens, <s> and </s> included
    max_target_length: int = 64  # doc tokens, <s> and </s> included
    beam_size: int = 10  # beam of generation


class Seq2Seq(nn.Module):
    def __init__(self, encoder, spec: Seq2SeqSpec):
        super().__init__()
        config = encoder.config
        self.encoder, self.spec = encoder, spec
        layer = nn.TransformerDecoderLayer(d_model=config.hidden_size, nhead=config.num_attention_heads,
                                           dim_feedforward=config.intermediate_size, dropout=config.hidden_dropout_prob,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=spec.decoder_layers)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = encoder.embeddings.word_embeddings.weight  # tied, as the reference

    def encode(self, source_ids: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=source_ids, attention_mask=source_mask).last_hidden_state

    def decode(self, memory: torch.Tensor, source_mask: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the next token after each target prefix."""
        target = self.encoder.embeddings(input_ids=target_ids)
        length = target_ids.shape[1]
        causal = torch.triu(torch.full((length, length), float("-inf"), device=target.device), diagonal=1)
        out = self.decoder(target, memory, tgt_mask=causal, memory_key_padding_mask=source_mask == 0)
        return self.lm_head(torch.tanh(self.dense(out)))

    def forward(self, batch: Seq2SeqBatch) -> torch.Tensor:
        memory = self.encode(batch.source_ids, batch.source_mask)
        logits = self.decode(memory, batch.source_mask, batch.target_ids)
        return seq2seq_loss(logits, batch.target_ids, batch.target_mask)


def seq2seq_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target token given the ones before it; padding ignored (mean over tokens)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = target_ids[:, 1:].reshape(-1)
    active = target_mask[:, 1:].reshape(-1).bool()
    return F.cross_entropy(shift_logits[active], shift_labels[active])


class IncrementalDecoder:
    """`Seq2Seq.decode` one position at a time, with cached keys and values: what beam search calls.

    `nn.TransformerDecoder` recomputes every prefix position at every step and has no cache, and the
    output projection then runs over all positions: for a 64-token doc that is ~30x the work of the
    last position alone. This class runs the same layers (post-norm `nn.TransformerDecoderLayer`,
    the only kind `Seq2Seq` builds) on the newest token only, keeps each layer's self-attention keys
    and values of the earlier positions, and projects the memory's keys and values once. Its logits
    equal the last position of `Seq2Seq.decode` up to float rounding (tests/test_code2nl.py).
    Rows are hypotheses; `select(rows)` keeps and reorders them (beam re-ranking, ended sources).
    The memory stays one entry per source (a beam's rows share it, their queries are grouped by
    source for the cross-attention): copying it for every row at every step cost more than the
    decoding itself; it is compacted only when a source has no row left.
    """

    def __init__(self, model: Seq2Seq, memory: torch.Tensor, memory_mask: torch.Tensor):
        self.model = model
        self.layers = list(model.decoder.layers)
        for layer in self.layers:
            if layer.norm_first or not layer.self_attn.batch_first or layer.self_attn.in_proj_weight is None:
                raise ValueError("IncrementalDecoder supports post-norm batch-first decoder layers with packed projections")
        self.heads = self.layers[0].self_attn.num_heads
        embeddings = model.encoder.embeddings
        self.padding_idx = model.encoder.config.pad_token_id
        # RoBERTa numbers positions from padding_idx + 1 and skips padding; BERT counts every position from 0.
        self.roberta_positions = position_offset(model.encoder.config) > 0
        self.steps = 0
        self.memory_keys, self.memory_values = [], []
        for layer in self.layers:
            _, w_k, w_v = layer.multihead_attn.in_proj_weight.chunk(3)
            _, b_k, b_v = layer.multihead_attn.in_proj_bias.chunk(3)
            self.memory_keys.append(self._heads(F.linear(memory, w_k, b_k)))
            self.memory_values.append(self._heads(F.linear(memory, w_v, b_v)))
        self.memory_attend = (memory_mask != 0)[:, None, None, :]  # (sources, 1, 1, length): True = attend
        self._set_sources(torch.arange(memory.shape[0], device=memory.device))  # rows start as one per source
        self.keys: list[torch.Tensor | None] = [None] * len(self.layers)
        self.values: list[torch.Tensor | None] = [None] * len(self.layers)
        # RoBERTa numbers positions by counting non-padding tokens (padding stays at padding_idx):
        # counted per row so that a generated padding token shifts positions as in `decode`.
        self.non_padding = torch.zeros(memory.shape[0], dtype=torch.long, device=memory.device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        rows, length, width = x.shape
        return x.view(rows, length, self.heads, width // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        rows, heads, length, size = x.shape
        return x.transpose(1, 2).reshape(rows, length, heads * size)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (rows, V) of the token after each row's prefix, `tokens` (rows,) being its newest token."""
        if self.roberta_positions:
            is_token = tokens != self.padding_idx
            self.non_padding = self.non_padding + is_token.long()
            positions = torch.where(is_token, self.non_padding + self.padding_idx, self.padding_idx)
        else:
            positions = torch.full_like(tokens, self.steps)
        self.steps += 1
        x = self.model.encoder.embeddings(input_ids=tokens[:, None], position_ids=positions[:, None])
        for i, layer in enumerate(self.layers):
            attention = layer.self_attn
            q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
            k, v = self._heads(k), self._heads(v)
            if self.keys[i] is not None:
                k, v = torch.cat([self.keys[i], k], dim=2), torch.cat([self.values[i], v], dim=2)
            self.keys[i], self.values[i] = k, v
            a = F.scaled_dot_product_attention(self._heads(q), k, v)  # the newest position sees every earlier one
            x = layer.norm1(x + attention.out_proj(self._merge(a)))
            cross = layer.multihead_attn
            w_q, _, _ = cross.in_proj_weight.chunk(3)
            b_q, _, _ = cross.in_proj_bias.chunk(3)
            a = self._cross_attention(self._heads(F.linear(x, w_q, b_q)), i)
            x = layer.norm2(x + cross.out_proj(self._merge(a)))
            x = layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))
        if self.model.decoder.norm is not None:
            x = self.model.decoder.norm(x)
        return self.model.lm_head(torch.tanh(self.model.dense(x)))[:, 0]

    def _cross_attention(self, queries: torch.Tensor, layer: int) -> torch.Tensor:
        """Attention of each row's query (rows, heads, 1, size) over its source's memory."""
        source, slot = self.source_of_row, self.slot_of_row
        grouped = queries.new_zeros(self.memory_keys[layer].shape[0], self.heads, self.slots, queries.shape[-1])
        grouped[source, :, slot] = queries[:, :, 0]
        out = F.scaled_dot_product_attention(grouped, self.memory_keys[layer], self.memory_values[layer], attn_mask=self.memory_attend)
        return out[source, :, slot][:, :, None]

    def _set_sources(self, source_of_row: torch.Tensor) -> None:
        """Each row's source, and its place among the rows of that source (0, 1, ...), in row order.

        Set once per `select`, not per layer and step: every cross-attention of a step reads it.
        """
        order = torch.argsort(source_of_row, stable=True)
        ordered = source_of_row[order]
        slots = torch.empty_like(order)
        slots[order] = torch.arange(len(order), device=order.device) - torch.searchsorted(ordered, ordered)
        self.source_of_row, self.slot_of_row, self.slots = source_of_row, slots, int(slots.max()) + 1

    def select(self, rows: torch.Tensor) -> None:
        """Keep the given rows (indices into the current rows, repeats allowed), in that order."""
        kept, source_of_row = torch.unique(self.source_of_row[rows], return_inverse=True)
        if len(kept) < self.memory_attend.shape[0]:  # some sources have no row left: drop their memory
            self.memory_keys = [k[kept] for k in self.memory_keys]
            self.memory_values = [v[kept] for v in self.memory_values]
            self.memory_attend = self.memory_attend[kept]
        self._set_sources(source_of_row)
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]
        self.non_padding = self.non_padding[rows]


@torch.inference_mode()
def beam_search(model: Seq2Seq, source_ids: torch.Tensor, source_mask: torch.Tensor, beam: int, max_length: int,
                bos: int = 0, eos: int = 2) -> list[list[int]]:
    """Best hypothesis per source (without <s> and </s>): sum of log-probabilities, no length penalty.

    Every source has its own beam (the reference's rule): at each step its open hypotheses are
    extended by their 2 x beam best (hypothesis, token) pairs in score order; a pair ending in </s>
    is an ended hypothesis, the others fill the beam until it holds `beam`. A source's search stops
    when nothing is left open, or when `beam` hypotheses have ended and no open one can still beat
    the best ended one (scores only decrease), or at `max_length` tokens (<s> included); its answer
    is its best ended hypothesis, or its best open one when none ended. All sources of the batch are
    searched together (their open hypotheses are the rows of one `IncrementalDecoder`), which
    changes the cost, not the result: tests/test_code2nl.py checks it against a one-source search.
    """
    sources = source_ids.shape[0]
    memory = model.encode(source_ids, source_mask)
    decoder = IncrementalDecoder(model, memory, source_mask)
    device = source_ids.device
    # Open hypotheses: rows grouped by source; `owner[r]` is the row's source, `history` its tokens after <s>.
    owner = list(range(sources))
    history = torch.empty(sources, 0, dtype=torch.long, device=device)
    scores = torch.zeros(sources, device=device)
    newest = torch.full((sources,), bos, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(sources)]
    answer: list[list[int] | None] = [None] * sources
    for _ in range(max_length - 1):
        log_probs = torch.log_softmax(decoder.step(newest).float(), dim=-1)
        vocab = log_probs.shape[-1]
        candidates = scores[:, None] + log_probs
        keep_rows, keep_tokens, keep_scores, keep_owner = [], [], [], []
        for source, group in itertools.groupby(range(len(owner)), key=owner.__getitem__):
            rows_of_source = list(group)  # contiguous: rows are kept grouped by source
            start, end = rows_of_source[0], rows_of_source[-1] + 1
            flat = candidates[start:end].reshape(-1)
            top_scores, top = flat.topk(min(2 * beam, flat.numel()))
            next_rows, next_tokens, next_scores = [], [], []
            for score, index in zip(top_scores.tolist(), top.tolist()):
                origin, token = divmod(index, vocab)
                if token == eos:
                    finished[source].append((score, history[start + origin].tolist()))
                else:
                    next_rows.append(start + origin)
                    next_tokens.append(token)
                    next_scores.append(score)
                if len(next_rows) == beam:
                    break
            best_finished = max((s for s, _ in finished[source]), default=-math.inf)
            if not next_rows or (len(finished[source]) >= beam and max(next_scores) < best_finished):
                answer[source] = max(finished[source], key=lambda f: f[0])[1]
            else:
                keep_rows += next_rows
                keep_tokens += next_tokens
                keep_scores += next_scores
                keep_owner += [source] * len(next_rows)
        if not keep_rows:
            break
        rows = torch.tensor(keep_rows, device=device)
        newest = torch.tensor(keep_tokens, device=device)
        history = torch.cat([history[rows], newest[:, None]], dim=1)
        scores = torch.tensor(keep_scores, device=device)
        owner = keep_owner
        decoder.select(rows)
    for row, source in enumerate(owner):  # reached max_length: the first (best) open row of each source
        if answer[source] is None and not finished[source]:
            finished[source].append((float(scores[row]), history[row].tolist()))
    for source in range(sources):
        if answer[source] is None:
            answer[source] = max(finished[source], key=lambda f: f[0])[1]
    return answer


@torch.inference_mode()
def plain_beam_search(model: Seq2Seq, ids: torch.Tensor, mask: torch.Tensor, beam: int, max_length: int,
                      bos: int = 0, eos: int = 2) -> list[int]:
    """`beam_search`'s rule written plainly, for one unpadded source (1, S): every prefix re-decoded in full.

    Kept beside the fast one as its oracle: the tests and benchmarks/code2nl_generation.py check
    that both give the same hypotheses, and the benchmark measures the speed-up against it.
    """
    memory = model.encode(ids, mask)
    prefixes, scores, finished = torch.full((1, 1), bos, device=ids.device), torch.zeros(1, device=ids.device), []
    for _ in range(max_length - 1):
        n = prefixes.shape[0]
        logits = model.decode(memory.expand(n, -1, -1), mask.expand(n, -1), prefixes)[:, -1].float()
        candidates = (scores[:, None] + torch.log_softmax(logits, dim=-1)).view(-1)
        top_scores, top = candidates.topk(min(2 * beam, candidates.numel()))
        next_prefixes, next_scores = [], []
        for score, flat in zip(top_scores.tolist(), top.tolist()):
            origin, token = divmod(flat, logits.shape[-1])
            if token == eos:
                finished.append((score, prefixes[origin, 1:].tolist()))
            else:
                next_prefixes.append(torch.cat([prefixes[origin], prefixes.new_tensor([token])]))
                next_scores.append(score)
            if len(next_prefixes) == beam:
                break
        if not next_prefixes or (len(finished) >= beam and max(next_scores) < max(s for s, _ in finished)):
            break
        prefixes, scores = torch.stack(next_prefixes), torch.tensor(next_scores, device=ids.device)
    if not finished:
        finished.append((float(scores[0]), prefixes[0, 1:].tolist()))
    return max(finished, key=lambda f: f[0])[1]


def save_seq2seq(model: Seq2Seq, tokenizer, folder: Path) -> None:
    """The encoder as a Hugging Face RoBERTa folder, the decoder and head as safetensors, the spec as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = {f"decoder.{k}": v.contiguous() for k, v in model.decoder.state_dict().items()}
    weights.update({f"dense.{k}": v.contiguous() for k, v in model.dense.state_dict().items()})
    save_file(weights, str(folder / DECODER_FILE))
    (folder / SPEC_FILE).write_text(json.dumps(asdict(model.spec), indent=2) + "\n")


def load_seq2seq(folder: str | Path, spec: Seq2SeqSpec | None = None, from_scratch: bool = False, dropout: float | None = None) -> Seq2Seq:
    """A fine-tuned model (folder with code2nl.json), or a new one on a pre-trained encoder."""
    from codebert.backbone import load_encoder, resolve

    folder = Path(resolve(folder))
    saved = folder / SPEC_FILE
    if saved.is_file():
        spec = Seq2SeqSpec(**json.loads(saved.read_text()))
    encoder = load_encoder(folder, from_scratch=from_scratch, dropout=dropout)  # pre-training heads skipped on purpose
    model = Seq2Seq(encoder, spec or Seq2SeqSpec())
    if saved.is_file():
        weights = load_file(str(folder / DECODER_FILE))
        model.decoder.load_state_dict({k[len("decoder."):]: v for k, v in weights.items() if k.startswith("decoder.")})
        model.dense.load_state_dict({k[len("dense."):]: v for k, v in weights.items() if k.startswith("dense.")})
    return model


# ------------------------------------------------------------------------------------ configs
@dataclass(kw_only=True)
class Code2nlFinetuneConfig(LoopConfig):
    model: str = option(help="pre-trained checkpoint whose encoder reads the code")
    data: Path = option(help="corpus folder (CodeSearchNet layout), or a CodeNN training file with --format codenn")
    out: Path = option(help="run folder: checkpoints, best/ (highest validation BLEU), final/")
    format: Literal["csn", "codenn"] = option("csn", "data format")
    valid_data: Path | None = option(None, "CodeNN validation file (--format codenn)")
    language: list[str] = option([], "languages (csn; empty: all)")
    decoder_layers: int = option(6, "Transformer decoder layers (the paper: 6)")
    from_scratch: bool = option(False, "random encoder of --model's shape (no pre-training)")
    max_source_length: int = option(256, "code tokens (the paper: 256)")
    max_target_length: int = option(64, "doc tokens (the paper: 64)")
    beam_size: int = option(10, "beam of generation (the paper: 10)")
    valid_beam_size: int = option(1, "beam at validation (1: greedy; faster)")
    max_steps: int = option(0, "optimizer steps (0: --epochs)")
    epochs: float = option(10.0, "passes over the training set when --max-steps is 0")
    learning_rate: float = option(5e-5, "peak learning rate of AdamW (the paper: 5e-5)")
    batch_size: int = option(64, "pairs per micro-batch (the paper: 64)")
    warmup_steps: int = option(0, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    dropout: float = option(0.1, "dropout of encoder and decoder")
    max_records: int = option(0, "read at most this many records per language and split (0: all)")
    valid_examples: int = option(1000, "validation pairs scored by BLEU (0: all)")
    best_metric: str = option("bleu", "validation metric that picks best/")
    resume: str | None = option(None, "auto: continue from the newest checkpoint in --out; or a checkpoint folder")

    def validate(self) -> list[str]:
        problems = self.validate_loop(steps_may_be_zero=True)
        if self.format == "csn" and not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.format == "codenn":
            if not self.data.is_file():
                problems.append(f"--data {self.data}: no such file")
            if self.valid_data is None or not self.valid_data.is_file():
                problems.append("--valid-data: a CodeNN validation file is required with --format codenn")
        if not 8 <= self.max_source_length <= 512 or not 4 <= self.max_target_length <= 512:
            problems.append("--max-source-length must be in [8, 512], --max-target-length in [4, 512]")
        if self.decoder_layers < 1:
            problems.append("--decoder-layers: must be >= 1")
        if self.beam_size < 1 or self.valid_beam_size < 1:
            problems.append("--beam-size and --valid-beam-size: must be >= 1")
        if self.batch_size < 1:
            problems.append("--batch-size: must be >= 1")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout: must be in [0, 1)")
        if self.max_steps == 0 and not self.epochs > 0:
            problems.append("--epochs: must be > 0 when --max-steps is 0")
        for name in ("max_records", "valid_examples"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        return problems

    def spec(self) -> Seq2SeqSpec:
        return Seq2SeqSpec(self.decoder_layers, self.max_source_length, self.max_target_length, self.beam_size)


def _read(cfg, split: str) -> Pairs:
    if cfg.format == "codenn":
        return read_codenn(cfg.data if split == "train" else cfg.valid_data, max_records=cfg.max_records)
    return read_csn(cfg.data, split, cfg.language, cfg.max_records)


def generate(model: Seq2Seq, tokenizer, sources: list[str], beam: int, batch_size: int = 16, progress: bool = False) -> list[str]:
    """Docs written for each source (ordered as given), decoded to text."""
    model.eval()
    spec = model.spec
    layout = Layout.of(tokenizer)
    bos, eos = bos_eos(layout)
    encoded = encode_texts(tokenizer, sources)
    out: list[str] = [""] * len(sources)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    device = next(model.parameters()).device
    bar = tqdm(total=len(sources), desc="generate", unit="doc", dynamic_ncols=True, disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = layout.pad([wrap(encoded[i], spec.max_source_length, layout) for i in idx])
        hyps = beam_search(model, ids.to(device), mask.to(device), beam, spec.max_target_length, bos, eos)
        for i, hyp in zip(idx, hyps):
            out[i] = tokenizer.decode(hyp, skip_special_tokens=True).strip()
        bar.update(len(idx))
    bar.close()
    return out


def bleu_of(predictions: list[str], pairs: Pairs) -> float:
    """Smoothed BLEU-4 exactly as the evaluator reads files (lower-cased, punctuation split)."""
    references = {i: [split_punctuation(t.strip().lower()) for t in targets] for i, targets in zip(pairs.ids, pairs.targets)}
    preds = {i: split_punctuation(p.strip().lower()) for i, p in zip(pairs.ids, predictions)}
    return corpus_bleu(references, preds)[0]


def finetune_main(cfg: Code2nlFinetuneConfig) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from codebert.backbone import load_tokenizer

    hf_logging.disable_progress_bar()
    dist_info, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    train, valid = _read(cfg, "train"), _read(cfg, "valid")
    if cfg.valid_examples and len(valid.ids) > cfg.valid_examples:
        keep = np.random.default_rng(cfg.seed).choice(len(valid.ids), cfg.valid_examples, replace=False)
        valid = Pairs([valid.ids[i] for i in keep], [valid.sources[i] for i in keep], [valid.targets[i] for i in keep])
    spec = cfg.spec()
    model = load_seq2seq(cfg.model, spec, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
    model.spec = spec
    corpus = EncodedPairs(encode_texts(tokenizer, train.sources), encode_texts(tokenizer, [t[0] for t in train.targets]))
    layout = Layout.of(tokenizer)

    def collate(c: EncodedPairs, indices, max_length: int) -> Seq2SeqBatch:
        src = layout.pad([wrap(c.sources[i], spec.max_source_length, layout) for i in indices])
        tgt = layout.pad([wrap(c.targets[i], spec.max_target_length, layout) for i in indices])
        return Seq2SeqBatch(*src, *tgt)

    def loss_fn(m, batch: Seq2SeqBatch) -> dict[str, Any]:
        moved = Seq2SeqBatch(*(t.to(device) for t in (batch.source_ids, batch.source_mask, batch.target_ids, batch.target_mask)))
        return {"loss": m(moved)}

    def evaluate(m) -> dict[str, float]:
        predictions = generate(m, tokenizer, valid.sources, cfg.valid_beam_size)
        return {"bleu": bleu_of(predictions, valid)}

    def save_model(m, folder: Path) -> None:
        save_seq2seq(m, tokenizer, folder)

    def load_model(m, folder: Path) -> None:
        # save_seq2seq's layout: the encoder's own folder plus the decoder file under model keys.
        weights = {f"encoder.{k}": v for k, v in read_weights(folder / "model.safetensors").items()}
        weights.update(read_weights(folder / DECODER_FILE))
        load_weights(m, weights, folder)

    batches = BucketedBatches(corpus, cfg.batch_size, spec.max_source_length, cfg.seed, dist_info.rank, dist_info.world, collate_fn=collate)
    steps = cfg.max_steps or steps_for_epochs(cfg.epochs, batches.batches_per_epoch(), cfg.grad_accumulation)
    loop = dataclasses.replace(cfg, max_steps=steps)
    trainer = Trainer(loop, model, loss_fn, batches, cfg.out, save_model, load_model=load_model, evaluate=evaluate,
                      run_config=to_dict(loop), dist_info=dist_info, device=device)
    figures = trainer.fit(cfg.resume)
    figures.update(out=str(cfg.out / "best"), examples=len(corpus), steps_planned=steps)
    return figures


def finetune_render(figures: dict[str, Any]) -> str:
    return numeric_table(figures) + f"\nbest model saved to {figures['out']}"


@dataclass
class Code2nlEvaluateConfig:
    model: Path = option(help="fine-tuned code2nl folder (best/ of `code2nl finetune`)")
    data: Path = option(help="corpus folder (CodeSearchNet layout), or a CodeNN file with --format codenn")
    out: Path = option(help="folder for predictions.txt, references.txt and results.json")
    format: Literal["csn", "codenn"] = option("csn", "data format")
    references: Path | None = option(None, "CodeNN references (id<TAB>title, several per id) for --format codenn")
    split: str = option("test", "split to generate for (csn)")
    language: list[str] = option([], "languages (csn; empty: all, each scored on its own)")
    beam_size: int = option(0, "beam (0: the model's, 10 as the paper)")
    max_records: int = option(0, "generate for at most this many records per language (0: all)")
    batch_size: int = option(16, "sources per batch")
    label: str = option("", "row name in tables (default: the model folder)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = [] if self.data.exists() else [f"--data {self.data}: not found"]
        if self.beam_size < 0:
            problems.append("--beam-size: must be >= 0 (0: the model's)")
        if self.batch_size < 1:
            problems.append("--batch-size: must be >= 1")
        if self.max_records < 0 or self.threads < 0:
            problems.append("--max-records and --threads: must be >= 0")
        return problems


def generate_main(cfg: Code2nlEvaluateConfig) -> dict[str, Any]:
    """Predictions (and references) written to --out; no score."""
    return evaluate_main(cfg, score=False)


def evaluate_main(cfg: Code2nlEvaluateConfig, score: bool = True) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from codebert.backbone import load_tokenizer

    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not (cfg.model / SPEC_FILE).is_file():
        raise UserError(f"{cfg.model}: no {SPEC_FILE}; fine-tune it first with `codebert code2nl finetune`")
    tokenizer = load_tokenizer(cfg.model)
    model = load_seq2seq(cfg.model).eval()
    beam = cfg.beam_size or model.spec.beam_size
    if cfg.format == "codenn":
        groups = {"csharp": read_codenn(cfg.data, cfg.references, cfg.max_records)}
    else:
        languages = cfg.language or sorted({i.split("-")[0] for i in read_csn(cfg.data, cfg.split, [], 1).ids})
        groups = {lang: read_csn(cfg.data, cfg.split, [lang], cfg.max_records) for lang in languages}
    cfg.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"model": str(cfg.model), "label": cfg.label or cfg.model.parent.name, "beam": beam}
    pred_lines, ref_lines, written = [], [], []
    for lang, pairs in groups.items():
        predictions = generate(model, tokenizer, pairs.sources, beam, cfg.batch_size, cfg.progress)
        written += predictions
        if score:
            figures[lang] = bleu_of(predictions, pairs)
        figures[f"{lang}_examples"] = len(pairs.ids)
        pred_lines += [f"{i}\t{p}\n" for i, p in zip(pairs.ids, predictions)]
        ref_lines += [f"{i}\t{t}\n" for i, targets in zip(pairs.ids, pairs.targets) for t in targets]
    figures["languages"] = list(groups)
    if score:
        figures["macro_bleu"] = float(np.mean([figures[lang] for lang in groups]))
    # A decoder that writes the same document for every function scores a BLEU that measures the
    # constant, not the model: the count says so beside the score.
    figures["distinct_predictions"] = len(set(written))
    figures["predictions"] = len(written)
    for name, lines in (("predictions.txt", pred_lines), ("references.txt", ref_lines)):
        with atomic_write(cfg.out / name) as f:
            f.writelines(lines)
    with atomic_write(cfg.out / "results.json") as f:
        f.write(json.dumps(figures, indent=2) + "\n")
    return figures


def evaluate_render(figures: dict[str, Any]) -> str:
    if "macro_bleu" not in figures:
        total = sum(figures[f"{lang}_examples"] for lang in figures["languages"])
        return f"{total} docs generated (beam {figures['beam']}): predictions.txt and references.txt in the output folder"
    rows = [[lang, figures[lang], figures[f"{lang}_examples"]] for lang in figures["languages"]]
    rows.append(["macro-average", figures["macro_bleu"], sum(figures[f"{l}_examples"] for l in figures["languages"])])
    text = format_table(["language", "smoothed BLEU-4", "examples"], rows)
    if "distinct_predictions" in figures:
        text += f"\n{figures['distinct_predictions']:,} distinct documents for {figures['predictions']:,} functions"
        if is_constant(figures["distinct_predictions"], figures["predictions"]):
            text += " (nearly constant output: the BLEU measures that constant, not the model's reading of the code)"
    return text


def is_constant(distinct: int, total: int) -> bool:
    """A nearly constant generator: at most 5% distinct documents (and more than one function)."""
    return total > 1 and distinct <= max(1, 0.05 * total)
