"""Byte-level BPE on NL and code, saved as a RoBERTa tokenizer; and the text of each side of a pair.

`codebert tokenizer train` learns the merges with the `tokenizers` library, then saves them through
`transformers.RobertaTokenizer`, so that `AutoTokenizer.from_pretrained(DIR)` opens the folder with
RoBERTa's special tokens at RoBERTa's ids (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4).
A backbone's own tokenizer (any BERT- or RoBERTa-family folder) is used instead where a stage starts
from a pre-trained encoder: `codebert.backbone.load_tokenizer` loads either, and the input layout
(`<s> NL </s></s> CODE </s>`, `[CLS] NL [SEP] CODE [SEP]`) is read off it by `codebert.inputs.Layout`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.corpus.jsonl import UNIMODAL, ReadReport, iter_corpus
from codebert.errors import UserError

log = logging.getLogger(__name__)

# RoBERTa's special tokens, in id order: the ids are part of the checkpoint format.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


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
    # Imported here: tokenizers and transformers only when training: `tokenizer train --help` stays instant.
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
