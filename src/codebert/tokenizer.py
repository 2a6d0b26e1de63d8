"""Byte-level BPE on NL and code, saved as a RoBERTa tokenizer; and the NL-code pair layout.

`codebert tokenizer train` learns the merges with the `tokenizers` library, then saves them through
`transformers.RobertaTokenizer`, so that `AutoTokenizer.from_pretrained(DIR)` opens the folder with
RoBERTa's special tokens at RoBERTa's ids (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4).
Any local RoBERTa or CodeBERT tokenizer folder (or a hub id, online) loads the same way.

The pair layout is RoBERTa's, as CodeBERT's reference scripts build it:
    <s> NL </s></s> CODE </s>
A pair longer than the model's window is cut "longest first": tokens are removed from the end of
whichever segment is longer, from the code on a tie, until it fits (BERT's `_truncate_seq_pair`,
used by CodeBERT's code-search scripts). `truncate_pair_lengths` gives the same lengths in closed form.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from codebert.config import option
from codebert.corpus.jsonl import UNIMODAL, ReadReport, iter_corpus
from codebert.errors import UserError

log = logging.getLogger(__name__)

# RoBERTa's special tokens, in id order: the ids are part of the checkpoint format.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
PAIR_SPECIAL_TOKENS = 4  # <s>, </s></s> between the segments, </s> at the end


@dataclass
class TrainTokenizerConfig:
    data: Path = option(help="corpus folder (CodeSearchNet layout) to learn from")
    out: Path = option(help="folder to write the tokenizer to (vocab.json, merges.txt, tokenizer.json, ...)")
    vocab_size: int = option(16_000, "vocabulary size, the 5 special tokens and 256 byte symbols included")
    min_frequency: int = option(2, "a merge must be seen at least this often")
    max_records: int = option(0, "use at most this many records per language and file (0: all)")
    languages: list[str] = option([], "languages to learn from (empty: every language in the corpus)")

    def validate(self) -> list[str]:
        problems = []
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            problems.append(f"--vocab-size: must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
        if self.min_frequency < 1:
            problems.append("--min-frequency: must be >= 1")
        if self.max_records < 0:
            problems.append("--max-records: must be >= 0")
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        return problems


def training_texts(data: Path, languages: list[str], max_records: int, report: ReadReport) -> Iterator[str]:
    """NL and code to learn merges from: docs of bimodal records, code of bimodal and unimodal ones.

    Only train and unimodal files are read: the tokenizer never sees valid or test data.
    """
    for _, _, record in iter_corpus(data, ("train", UNIMODAL), languages or None, max_records, report):
        if record["docstring"]:
            yield record["docstring"]
        yield record["code"]


def train(cfg: TrainTokenizerConfig):
    """Learn byte-level BPE merges and return a transformers RobertaTokenizer holding them."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    report = ReadReport()
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(
        training_texts(cfg.data, cfg.languages, cfg.max_records, report),
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    if report.records == 0:
        raise UserError(f"{cfg.data}: no train or unimodal records to learn a tokenizer from")
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = bpe.save_model(tmp)
        tokenizer = RobertaTokenizer(vocab=vocab_file, merges=merges_file, add_prefix_space=False)
    # Exact round trips: never "clean up" spaces before punctuation when decoding code.
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = 512
    return tokenizer, report


def save(tokenizer, out: Path) -> None:
    """Write the tokenizer folder atomically: a temporary sibling folder renamed into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        tokenizer.save_pretrained(tmp)
        # vocab.json + merges.txt too: the files roberta-base and codebert-base ship, which older
        # transformers releases and other tools read.
        tokenizer.backend_tokenizer.model.save(tmp)
        staged = Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for item in staged.iterdir():
            item.replace(out / item.name)


def load_tokenizer(name_or_path: str | Path):
    """A RoBERTa-style tokenizer from a folder (ours, roberta-base, codebert-base) or a hub id.

    Checks the special-token ids that the checkpoint format relies on.
    """
    from transformers import AutoTokenizer

    text = str(name_or_path)
    if Path(text).exists() and not (Path(text) / "tokenizer_config.json").exists() and not (Path(text) / "vocab.json").exists():
        raise UserError(f"{text}: not a tokenizer folder (no tokenizer_config.json or vocab.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(text)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {text!r}: {str(exc).splitlines()[0]}") from None
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.convert_tokens_to_ids(token) != expected_id:
            raise UserError(f"{text}: special token {token} has id {tokenizer.convert_tokens_to_ids(token)}, expected {expected_id} (RoBERTa layout)")
    return tokenizer


def nl_text(record: dict[str, Any]) -> str:
    """The NL side of a pair, as CodeBERT's reference scripts build it: doc tokens joined by spaces."""
    return " ".join(record["docstring_tokens"])


def code_text(record: dict[str, Any]) -> str:
    """The code side of a pair: code tokens joined by spaces (comments and docstring already out)."""
    return " ".join(record["code_tokens"])


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


class PairEncoding(NamedTuple):
    input_ids: list[int]  # <s> NL </s></s> CODE </s>
    nl: slice  # positions of the NL tokens in input_ids
    code: slice  # positions of the code tokens in input_ids


def build_pair(nl_ids: list[int], code_ids: list[int], max_length: int, cls_id: int = 0, sep_id: int = 2) -> PairEncoding:
    """Lay out one NL-code pair in RoBERTa's format, truncated longest-first to `max_length`."""
    if max_length < PAIR_SPECIAL_TOKENS:
        raise ValueError(f"max_length must be at least {PAIR_SPECIAL_TOKENS}")
    nl_keep, code_keep = truncate_pair_lengths(len(nl_ids), len(code_ids), max_length - PAIR_SPECIAL_TOKENS)
    ids = [cls_id, *nl_ids[:nl_keep], sep_id, sep_id, *code_ids[:code_keep], sep_id]
    return PairEncoding(ids, slice(1, 1 + nl_keep), slice(3 + nl_keep, 3 + nl_keep + code_keep))


def main(cfg: TrainTokenizerConfig) -> dict[str, Any]:
    start = time.perf_counter()
    tokenizer, report = train(cfg)
    if len(tokenizer) < cfg.vocab_size:
        log.warning("the corpus has too few distinct merges: %d tokens instead of %d", len(tokenizer), cfg.vocab_size)
    save(tokenizer, cfg.out)
    return {
        "out": str(cfg.out),
        "vocab_size": len(tokenizer),
        "texts_from_records": report.records,
        "malformed_lines": len(report.skipped),
        "seconds": round(time.perf_counter() - start, 2),
    }


def render(figures: dict[str, Any]) -> str:
    return (
        f"tokenizer with {figures['vocab_size']:,} tokens learned from {figures['texts_from_records']:,} records "
        f"in {figures['seconds']:.1f} s, saved to {figures['out']}"
    )
