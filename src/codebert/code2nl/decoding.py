"""Turning a code2nl model into text: the cached decoder, beam search (and its plain oracle), `generate`.

As the reference (CodeBERT/code2nl/model.py): a beam search of size 10 whose hypotheses are ranked
by the sum of token log-probabilities (no length penalty) and end at `</s>`. Beyond it, as options
(the CPU recipe's): a length penalty on the ended hypotheses, a rule against repeated n-grams, a
least length, and a forced prefix (a Go document opens with its function's name).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from codebert.backbone import position_offset
from codebert.code2nl.data import bos_eos, encode_summaries, joined_text, model_sources, source_input
from codebert.code2nl.model import Seq2Seq
from codebert.inputs import Layout
from codebert.inputs import encode_texts


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

    def __init__(self, model: Seq2Seq, memory: torch.Tensor, memory_mask: torch.Tensor, source_ids: torch.Tensor | None = None):
        self.model = model
        if model.spec.copy and source_ids is None:
            raise ValueError("a copying decoder needs the source ids")
        # The copy distribution (spec.copy) reads the memory itself and the source's ids, per source.
        self.memory, self.memory_mask, self.source_ids = memory, memory_mask, source_ids
        self.layers = list(model.decoder.layers)
        for layer in self.layers:
            if layer.norm_first or not layer.self_attn.batch_first or layer.self_attn.in_proj_weight is None:
                raise ValueError("IncrementalDecoder supports post-norm batch-first decoder layers with packed projections")
        self.heads = self.layers[0].self_attn.num_heads
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
        logits = self.model.full_logits(x)
        if not self.model.spec.copy:
            return logits[:, 0]
        return self._mix_copy(logits, x)[:, 0]

    def _mix_copy(self, logits: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """`Seq2Seq.decode`'s copy for the newest position, the rows' queries grouped by source (as
        the cross-attention) so that no row needs its own copy of the memory."""
        source, slot = self.source_of_row, self.slot_of_row
        grouped = state.new_zeros(self.memory.shape[0], self.slots, state.shape[-1])
        grouped[source, slot] = self.model.copy_query(state[:, 0])
        scores = (grouped @ self.memory.transpose(1, 2))[source, slot][:, None] / self.memory.shape[-1] ** 0.5  # (rows, 1, S)
        ids, mask = self.source_ids[source], self.memory_mask[source]
        attention = self.model.copy_attention(scores, ids, mask)
        by_source = attention.new_zeros(self.memory.shape[0], self.slots, attention.shape[-1])
        by_source[source, slot] = attention[:, 0]
        context = (by_source.to(self.memory.dtype) @ self.memory)[source, slot][:, None]
        return self.model.mix_copy(logits, state, attention, context, ids)

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
            self.memory, self.memory_mask = self.memory[kept], self.memory_mask[kept]
            self.source_ids = None if self.source_ids is None else self.source_ids[kept]
        self._set_sources(source_of_row)
        self.keys = [None if k is None else k[rows] for k in self.keys]
        self.values = [None if v is None else v[rows] for v in self.values]
        self.non_padding = self.non_padding[rows]


def ended_score(score: float, tokens: int, length_penalty: float) -> float:
    """An ended hypothesis's rank: its summed log-probability over `tokens ** length_penalty`, `tokens`
    counting its </s> (HF generate's `length_penalty`, which ranks by sum / length ** alpha).

    0 is the reference's rule (the sum alone). Its beam prefers a short document: each token lowers
    the sum, so a 5-word summary outranks the 15 words a docstring has, and smoothed BLEU-4's
    brevity penalty (log BP = 1 - (r + 1) / (h + 1)) then costs the short one most of its score.
    alpha > 0 ranks by the per-token log-probability (1: its mean), which the open beams are not
    ranked by (they keep the sum, as HF's).
    """
    return score / tokens ** length_penalty if length_penalty else score


def block_early_end(log_probs: torch.Tensor, written: int, min_length: int, eos: int) -> torch.Tensor:
    """`log_probs` (rows, V) with -inf on </s> while the rows have written fewer than `min_length`
    tokens (HF generate's `min_new_tokens`); 0: unchanged.

    Beyond the reference (its beam may end at any length): smoothed BLEU-4's brevity penalty
    (log BP = 1 - (r + 1) / (h + 1)) costs a 5-token document most of its score against a
    15-token reference, and a briefly trained decoder ends after ~5 tokens.
    """
    if written < min_length:
        log_probs[:, eos] = -math.inf
    return log_probs


# Tokens a document writes after its forced prefix before it may end: a name alone ("Pop .") is no
# summary. csn6 valid, Go, 200 functions (CPU recipe, 4,000 steps): smoothed BLEU-4 11.04 with 0,
# 11.30 with 2 or 3, 11.33 with 5 (8.67 without the prefix).
AFTER_PREFIX = 2


def force_prefix(log_probs: torch.Tensor, owner: list[int], written: int, prefixes: list[list[int]] | None,
                 eos: int) -> torch.Tensor:
    """`log_probs` (rows, V) where each row whose source's prefix (`prefixes[owner[row]]`) has a token at
    position `written` allows that token alone, at log-probability 0 (HF generate's prompt tokens:
    given, not scored; a source's hypotheses all share the prefix, so their order is the decoder's
    own over what follows), and `eos` not for `AFTER_PREFIX` tokens after it; None or an empty
    prefix: unchanged.

    Beyond the reference: a Go doc comment begins with the function's name by convention, and a briefly
    trained decoder that opens with it writes only its first part ("remove halts the server." for
    RemoveUser); given the name, it writes the rest.
    """
    if not prefixes:
        return log_probs
    for row, source in enumerate(owner):
        if written < len(prefixes[source]):
            token = prefixes[source][written]
            log_probs[row] = -math.inf
            log_probs[row, token] = 0.0
        elif prefixes[source] and written < len(prefixes[source]) + AFTER_PREFIX:
            log_probs[row, eos] = -math.inf
    return log_probs


def block_repeats(log_probs: torch.Tensor, histories: list[list[int]], size: int) -> torch.Tensor:
    """`log_probs` (rows, V) with -inf on every token that would repeat an n-gram of `size` tokens
    already in its row's history (HF generate's `no_repeat_ngram_size`); size 0: unchanged.

    Beyond the reference (its beam has no such rule): a copying decoder, early in training, copies one
    sub-word again and again (`fnmatchmatchmatch...`); the CPU recipe blocks a repeated trigram.
    """
    if size <= 0:
        return log_probs
    for row, tokens in enumerate(histories):
        if len(tokens) < size - 1:
            continue
        prefix = tokens[len(tokens) - size + 1:] if size > 1 else []
        banned = {tokens[i + size - 1] for i in range(len(tokens) - size + 1) if tokens[i : i + size - 1] == prefix}
        if banned:
            log_probs[row, list(banned)] = -math.inf
    return log_probs


@torch.inference_mode()
def beam_search(model: Seq2Seq, source_ids: torch.Tensor, source_mask: torch.Tensor, beam: int, max_length: int,
                bos: int = 0, eos: int = 2, no_repeat_ngram: int = 0, length_penalty: float = 0.0,
                min_length: int = 0, prefixes: list[list[int]] | None = None) -> list[list[int]]:
    """Best hypothesis per source (without <s> and </s>): sum of log-probabilities (`length_penalty` 0,
    the reference's), or `ended_score`'s per-token rank; none ends before `min_length` tokens
    (`block_early_end`; 0, the reference's: at any length); each begins with its source's prefix
    (`force_prefix`; None: none, the reference's), which counts among its tokens.

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
    decoder = IncrementalDecoder(model, memory, source_mask, source_ids)
    device = source_ids.device
    # Open hypotheses: rows grouped by source; `owner[r]` is the row's source, `history` its tokens after <s>.
    owner = list(range(sources))
    history = torch.empty(sources, 0, dtype=torch.long, device=device)
    scores = torch.zeros(sources, device=device)
    newest = torch.full((sources,), bos, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(sources)]
    answer: list[list[int] | None] = [None] * sources
    for length in range(1, max_length):  # `length`: tokens after <s> once this step's token is chosen
        log_probs = torch.log_softmax(decoder.step(newest).float(), dim=-1)
        if no_repeat_ngram:
            log_probs = block_repeats(log_probs, history.tolist(), no_repeat_ngram)
        log_probs = block_early_end(log_probs, length - 1, min_length, eos)
        log_probs = force_prefix(log_probs, owner, length - 1, prefixes, eos)
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
                if score == -math.inf:  # a forced prefix leaves one token per row: the rest is not a hypothesis
                    break
                origin, token = divmod(index, vocab)
                if token == eos:
                    finished[source].append((ended_score(score, length, length_penalty), history[start + origin].tolist()))
                else:
                    next_rows.append(start + origin)
                    next_tokens.append(token)
                    next_scores.append(score)
                if len(next_rows) == beam:
                    break
            best_finished = max((s for s, _ in finished[source]), default=-math.inf)
            if not next_rows or (len(finished[source]) >= beam
                                 and ended_score(max(next_scores), length + 1, length_penalty) < best_finished):
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
            finished[source].append((ended_score(float(scores[row]), history.shape[1] + 1, length_penalty), history[row].tolist()))
    for source in range(sources):
        if answer[source] is None:
            answer[source] = max(finished[source], key=lambda f: f[0])[1]
    return answer


@torch.inference_mode()
def plain_beam_search(model: Seq2Seq, ids: torch.Tensor, mask: torch.Tensor, beam: int, max_length: int,
                      bos: int = 0, eos: int = 2, no_repeat_ngram: int = 0, length_penalty: float = 0.0,
                      min_length: int = 0, prefix: list[int] | None = None) -> list[int]:
    """`beam_search`'s rule written plainly, for one unpadded source (1, S): every prefix re-decoded in full.

    Kept beside the fast one as its oracle: the tests and benchmarks/code2nl_generation.py check
    that both give the same hypotheses, and the benchmark measures the speed-up against it.
    """
    memory = model.encode(ids, mask)
    prefixes, scores, finished = torch.full((1, 1), bos, device=ids.device), torch.zeros(1, device=ids.device), []
    for _ in range(max_length - 1):
        n = prefixes.shape[0]
        logits = model.decode(memory.expand(n, -1, -1), mask.expand(n, -1), prefixes, ids.expand(n, -1))[:, -1].float()
        log_probs = block_repeats(torch.log_softmax(logits, dim=-1), prefixes[:, 1:].tolist(), no_repeat_ngram)
        log_probs = block_early_end(log_probs, prefixes.shape[1] - 1, min_length, eos)
        log_probs = force_prefix(log_probs, [0] * n, prefixes.shape[1] - 1, [prefix] if prefix else None, eos)
        candidates = (scores[:, None] + log_probs).view(-1)
        top_scores, top = candidates.topk(min(2 * beam, candidates.numel()))
        next_prefixes, next_scores = [], []
        for score, flat in zip(top_scores.tolist(), top.tolist()):
            if score == -math.inf:
                break
            origin, token = divmod(flat, logits.shape[-1])
            if token == eos:
                finished.append((ended_score(score, prefixes.shape[1], length_penalty), prefixes[origin, 1:].tolist()))
            else:
                next_prefixes.append(torch.cat([prefixes[origin], prefixes.new_tensor([token])]))
                next_scores.append(score)
            if len(next_prefixes) == beam:
                break
        if not next_prefixes or (len(finished) >= beam and ended_score(max(next_scores), prefixes.shape[1] + 1, length_penalty)
                                 < max(s for s, _ in finished)):
            break
        prefixes, scores = torch.stack(next_prefixes), torch.tensor(next_scores, device=ids.device)
    if not finished:
        finished.append((ended_score(float(scores[0]), prefixes.shape[1], length_penalty), prefixes[0, 1:].tolist()))
    return max(finished, key=lambda f: f[0])[1]


def generate(model: Seq2Seq, tokenizer, sources: list[str], beam: int, batch_size: int = 16, progress: bool = False,
             no_repeat_ngram: int | None = None, length_penalty: float | None = None,
             min_length: int | None = None, exemplars: list[str] | None = None, names: list[str] | None = None,
             languages: list[str] | None = None, open_with_name: list[str] | None = None) -> list[str]:
    """Docs written for each source (ordered as given), decoded to text; `no_repeat_ngram`,
    `length_penalty` and `min_length`: None, the model's; `exemplars`: each source's retrieved
    summary, for a model that reads one (`Seq2SeqSpec.exemplar_tokens`; `stage.exemplars_of`).
    A source whose language (`languages`) is one of `open_with_name` (None: the model's
    `Seq2SeqSpec.open_with_name`) and whose function's name (`names`) is known has its document
    begin with that name, as written (`name_prefixes`)."""
    model.eval()
    spec = model.spec
    layout = Layout.of(tokenizer)
    bos, eos = bos_eos(layout)
    encoded = encode_texts(tokenizer, model_sources(sources, spec.split_identifiers))
    if spec.exemplar_tokens and exemplars is None:
        raise ValueError("this model reads an exemplar before each source: pass `exemplars`")
    exemplar_ids = encode_texts(tokenizer, exemplars) if spec.exemplar_tokens else [None] * len(sources)
    out: list[str] = [""] * len(sources)
    prefixes = name_prefixes(tokenizer, spec, len(sources), names, languages,
                             spec.open_with_name if open_with_name is None else open_with_name)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    device = next(model.parameters()).device
    bar = tqdm(total=len(sources), desc="generate", unit="doc", dynamic_ncols=True, disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = layout.pad([source_input(encoded[i], spec.max_source_length, layout, exemplar_ids[i], spec.exemplar_tokens)
                                for i in idx])
        hyps = beam_search(model, ids.to(device), mask.to(device), beam, spec.max_target_length, bos, eos,
                           spec.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram,
                           spec.length_penalty if length_penalty is None else length_penalty,
                           spec.min_length if min_length is None else min_length,
                           [prefixes[i] for i in idx] if any(prefixes) else None)
        for i, hyp in zip(idx, hyps):
            out[i] = document_text(tokenizer, hyp, spec.joiner, prefixes[i], names[i] if prefixes[i] else "")
        bar.update(len(idx))
    bar.close()
    return out


def name_prefixes(tokenizer, spec, count: int, names: list[str] | None, languages: list[str] | None,
                  open_with_name: list[str]) -> list[list[int]]:
    """Each of `count` sources' forced prefix (`beam_search`): its function's name as the model writes it
    in a summary (split and joined, `data.encode_joined`, where the model joins identifiers), for a
    source of a language in `open_with_name` with a known name; [] for every other source."""
    if not names or not languages or not open_with_name:
        return [[] for _ in range(count)]
    wanted = [bool(name) and language in open_with_name for name, language in zip(names, languages)]
    chosen = [name for name, keep in zip(names, wanted) if keep]
    encoded = encode_summaries(tokenizer, chosen, spec.joiner)
    room = spec.max_target_length - 2  # <s> and at least </s>
    chosen_ids = iter(encoded)
    return [[int(t) for t in next(chosen_ids)[:room]] if keep else [] for keep in wanted]


def document_text(tokenizer, ids: list[int], joiner: int, prefix: list[int], name: str) -> str:
    """A document's text: `joined_text`, with a forced prefix written as the name it came from (its case
    kept: `RemoveUser removes ...`, where the lower-casing tokenizer would write `removeuser`)."""
    if not prefix or ids[: len(prefix)] != prefix:
        return joined_text(tokenizer, ids, joiner)
    rest = ids[len(prefix):]
    if rest and rest[0] == joiner:  # the decoder went on with the name: glue, as joined_text does
        return (name + joined_text(tokenizer, rest[1:], joiner)).strip()
    return f"{name} {joined_text(tokenizer, rest, joiner)}".strip()
