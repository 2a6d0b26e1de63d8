"""Every input layout, built from the tokenizer's own special tokens.

A `Layout` is read off a tokenizer once (`Layout.of`), by asking it to wrap known texts, so that
any family whose tokenizer adds its own special tokens (RoBERTa's `<s> ... </s>`, BERT's
`[CLS] ... [SEP]`) is laid out with its own tokens, never ids known by number:

    single   PREFIX text SUFFIX               (a query, a code snippet, a code-to-doc source)
    pair     PREFIX NL MIDDLE CODE SUFFIX     (pre-training, the cross-encoder, probing; paper §3.2)

Pair styles (`PairStyle`):
  codebert   one separator: `<s> NL </s> CODE </s>` (RoBERTa), `[CLS] NL [SEP] CODE [SEP]` (BERT).
             CodeBERT's code-search script builds exactly this (codesearch/utils.py,
             convert_examples_to_features: `[cls] + tokens_a + [sep] + tokens_b + [sep]`), and the
             paper's §3.2 / Figure 1 show one separator. The default.
  tokenizer  the tokenizer's own pair template: RoBERTa's `<s> NL </s></s> CODE </s>` (what
             `tokenizer(nl, code)` and RoBERTa's own pre-training use); BERT's is the same as codebert.
Token types: where the tokenizer marks a pair's second segment (BERT's type 1 on `CODE [SEP]`, as
utils.py's `sequence_b_segment_id` and BERT's own convention), pair batches carry them; RoBERTa has
one segment type and gets none (the model's default of zeros).

A pair longer than the window is cut "longest first": tokens are removed from the end of whichever
segment is longer, from the code on a tie, until it fits (BERT's `_truncate_seq_pair`, used by
CodeBERT's code-search scripts); `truncate_pair_lengths` gives the same lengths in closed form.
The cross-encoder also cuts the NL to 50 tokens first, as utils.py does (`nl_length`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from codebert.errors import UserError

if TYPE_CHECKING:  # for annotations only; see below
    import torch

# torch is imported where tensors are made, not here: the query path (`codebert.tool.query_encoder`)
# builds its inputs with this module and must not pay for importing torch.


def truncate_pair_lengths(nl_len: int, code_len: int, budget: int) -> tuple[int, int]:
    """Lengths kept by longest-first truncation of two segments to at most `budget` tokens in all.

    Same result as repeatedly dropping the last token of the longer segment (the code on a tie).
    """
    if budget < 0:
        raise ValueError("budget must be >= 0")
    if nl_len + code_len <= budget:
        return nl_len, code_len
    nl_keep = min(nl_len, max((budget + 1) // 2, budget - code_len))
    return nl_keep, budget - nl_keep


PairStyle = Literal["codebert", "tokenizer"]
PAIR_STYLES = ("codebert", "tokenizer")


class PairEncoding(NamedTuple):
    input_ids: list[int]  # PREFIX NL MIDDLE CODE SUFFIX
    nl: slice  # positions of the NL tokens in input_ids
    code: slice  # positions of the code tokens in input_ids
    token_types: list[int]  # 0 up to the middle, the layout's second type from CODE to the end


class PairBatch(NamedTuple):
    """A padded batch of pairs, as a model's forward takes it."""

    input_ids: "torch.Tensor"  # (B, T)
    attention_mask: "torch.Tensor"  # (B, T) 1 for tokens, 0 for padding
    token_type_ids: "torch.Tensor | None"  # (B, T), or None where the family has one segment type (RoBERTa)

    def to(self, device) -> dict[str, "torch.Tensor | None"]:
        """The forward's keyword arguments on `device`."""
        types = None if self.token_type_ids is None else self.token_type_ids.to(device)
        return {"input_ids": self.input_ids.to(device), "attention_mask": self.attention_mask.to(device), "token_type_ids": types}


def _find(haystack: list[int], needle: list[int], start: int = 0) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


@dataclass(frozen=True)
class Layout:
    """Where one tokenizer puts its special tokens; every batch of every stage is built here."""

    prefix: tuple[int, ...]  # before a single text or a pair's first segment (<s>, [CLS])
    middle: tuple[int, ...]  # between a pair's segments (</s></s>, [SEP])
    suffix: tuple[int, ...]  # after a single text or a pair's last segment (</s>, [SEP])
    pad_id: int  # padding, never attended to
    mask_id: int | None  # the MLM mask token (None: the tokenizer has none)
    special_ids: tuple[int, ...]  # every special token id (never a random MLM replacement)
    second_type: int = 0  # token type of a pair's CODE and closing tokens: 1 where the tokenizer marks segments (BERT)

    @staticmethod
    def of(tokenizer, pair: PairStyle = "codebert") -> Layout:
        """Read the layout off `tokenizer` by wrapping two known texts with its own special tokens.

        `pair`: "codebert" puts one separator between the segments (the single text's closing
        token(s), `</s>` / `[SEP]`); "tokenizer" keeps the tokenizer's own pair template.
        """
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        single = tokenizer("a")["input_ids"]
        encoded_pair = tokenizer("a", "b", return_token_type_ids=True)
        pair_ids = encoded_pair["input_ids"]
        i = _find(single, a)
        j = _find(pair_ids, a)
        k = _find(pair_ids, b, j + len(a)) if j >= 0 else -1
        if min(i, j, k) < 0 or single[:i] != pair_ids[:j] or single[i + len(a) :] != pair_ids[k + len(b) :]:
            raise UserError(f"cannot read the input layout of tokenizer {type(tokenizer).__name__}: {single} / {pair_ids}")
        prefix, suffix = tuple(single[:i]), tuple(single[i + len(a) :])
        if not prefix and not suffix:
            raise UserError(f"tokenizer {type(tokenizer).__name__} adds no special tokens: no layout to build inputs with")
        if tokenizer.pad_token_id is None:
            raise UserError(f"tokenizer {type(tokenizer).__name__} has no padding token")
        if pair not in PAIR_STYLES:
            raise UserError(f"pair layout {pair!r}: choose one of {', '.join(PAIR_STYLES)}")
        return Layout(
            prefix=prefix, middle=suffix if pair == "codebert" else tuple(pair_ids[j + len(a) : k]), suffix=suffix,
            pad_id=int(tokenizer.pad_token_id), mask_id=tokenizer.mask_token_id,
            special_ids=tuple(sorted(int(t) for t in tokenizer.all_special_ids)),
            second_type=max(encoded_pair.get("token_type_ids") or [0]),
        )

    @property
    def single_overhead(self) -> int:
        return len(self.prefix) + len(self.suffix)

    @property
    def pair_overhead(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def single(self, ids: list[int] | np.ndarray, max_length: int) -> list[int]:
        """PREFIX text SUFFIX, the text cut to fit `max_length` tokens in all."""
        keep = max_length - self.single_overhead
        if keep < 1:
            raise ValueError(f"max_length must be at least {self.single_overhead + 1}")
        body = ids[:keep].tolist() if isinstance(ids, np.ndarray) else list(ids[:keep])
        return [*self.prefix, *body, *self.suffix]

    def pair(self, nl_ids: list[int], code_ids: list[int], max_length: int, nl_length: int = 0) -> PairEncoding:
        """PREFIX NL MIDDLE CODE SUFFIX, the NL first cut to `nl_length` tokens (0: not cut), then the
        pair truncated longest-first to `max_length` tokens."""
        if max_length < self.pair_overhead:
            raise ValueError(f"max_length must be at least {self.pair_overhead}")
        if nl_length:
            nl_ids = nl_ids[:nl_length]
        nl_keep, code_keep = truncate_pair_lengths(len(nl_ids), len(code_ids), max_length - self.pair_overhead)
        ids = [*self.prefix, *nl_ids[:nl_keep], *self.middle, *code_ids[:code_keep], *self.suffix]
        nl_start = len(self.prefix)
        code_start = nl_start + nl_keep + len(self.middle)
        types = [0] * code_start + [self.second_type] * (len(ids) - code_start)
        return PairEncoding(ids, slice(nl_start, nl_start + nl_keep), slice(code_start, code_start + code_keep), types)

    def pad(self, sequences: list[list[int]]) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(input_ids, attention_mask): rows padded to the longest with the pad token."""
        return pad_sequences(sequences, self.pad_id)

    def pad_pairs(self, encodings: list[PairEncoding]) -> PairBatch:
        """Pair encodings padded into one batch, with token types where the family has them."""
        ids, mask = self.pad([e.input_ids for e in encodings])
        types = None
        if self.second_type:
            types, _ = pad_sequences([e.token_types for e in encodings], 0)
        return PairBatch(ids, mask, types)

    def singles(self, sequences: list[np.ndarray], max_length: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """A padded batch of single inputs."""
        return self.pad([self.single(s, max_length) for s in sequences])

    def pairs(self, pairs: list[tuple[np.ndarray, np.ndarray]], max_length: int, nl_length: int = 0) -> PairBatch:
        """A padded batch of NL-code pairs, each cut as `pair` cuts it."""
        return self.pad_pairs([self.pair(list(nl), list(code), max_length, nl_length) for nl, code in pairs])


def pad_arrays(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) as int64 arrays: rows padded to the longest; the mask marks real tokens.

    The mask comes from the lengths, not from comparing ids with `pad_id`: BERT's [PAD] is id 0,
    and a layout must not depend on which id a family gave its padding token.
    """
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_sequences(sequences: list[list[int]], pad_id: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """`pad_arrays` as torch tensors (int64)."""
    # Imported here: torch only where tensors are made: the lean query path uses this module without it.
    import torch

    ids, mask = pad_arrays(sequences, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(mask)


# RoBERTa's layout with our tokenizer's ids (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4), pairs as
# CodeBERT builds them (one </s> between NL and code): the default of functions that were written
# for it, and what `Layout.of` reads off our tokenizer folders.
ROBERTA = Layout(prefix=(0,), middle=(2,), suffix=(2,), pad_id=1, mask_id=4, special_ids=(0, 1, 2, 3, 4))


def encode_texts(tokenizer, texts: list[str], batch: int = 2048) -> list[np.ndarray]:
    """Token ids of each text, without special tokens (the layout adds them)."""
    out: list[np.ndarray] = []
    for i in range(0, len(texts), batch):
        # verbose=False: long functions are expected here; build_pair truncates them later.
        encoded = tokenizer(texts[i : i + batch], add_special_tokens=False, verbose=False)["input_ids"]
        out.extend(np.asarray(ids, dtype=np.int32) for ids in encoded)
    return out
