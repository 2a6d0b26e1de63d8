"""The pairs of code-to-documentation generation: read, encoded, batched, and laid out for the model.

Data: CodeSearchNet jsonl (code_tokens -> docstring_tokens), or the CodeNN format (`--format
codenn`: tab-separated id, question id, title, code, label; the title is the target). Sources and
targets are wrapped in the tokenizer's single layout (`<s> text </s>`, `[CLS] text [SEP]`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from codebert.corpus.jsonl import ReadReport, iter_corpus
from codebert.errors import UserError
from codebert.inputs import ROBERTA, Layout, encode_texts

log = logging.getLogger(__name__)


@dataclass
class Pairs:
    ids: list[str]  # example ids (CodeNN ids, or "<language>-<n>")
    sources: list[str]  # code text
    targets: list[list[str]]  # reference docs (several for CodeNN evaluation files)
    languages: list[str] = field(default_factory=list)  # each pair's language ("" for CodeNN files)
    repos: list[str] = field(default_factory=list)  # each pair's repository (csn; "" where not known)
    names: list[str] = field(default_factory=list)  # each function's own name, unqualified (csn, tree; "" for CodeNN)

    def subset(self, keep) -> Pairs:
        columns = (self.ids, self.sources, self.targets, self.languages, self.repos, self.names)
        return Pairs(*([column[i] for i in keep] for column in columns))


def source_text(code_tokens: list[str]) -> str:
    """The source as CodeBERT's code2nl/run.py reads it: tokens joined by spaces, line breaks inside
    tokens (multi-line strings) made spaces, every run of white space collapsed to one space."""
    return " ".join(" ".join(code_tokens).replace("\n", " ").split())


def target_text(docstring_tokens: list[str]) -> str:
    """The doc as run.py reads it: tokens joined by spaces, line breaks removed (not made spaces,
    as run.py does), white space collapsed."""
    return " ".join(" ".join(docstring_tokens).replace("\n", "").split())


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def split_identifiers(text: str) -> str:
    """camelCase and PascalCase split into words (`getHTTPResponse` -> `get HTTP Response`); snake_case
    is left as it is (a WordPiece splits at `_` already). The CPU recipe's sources: a summary says
    "Get the user name" of `getUserName`, and a lower-casing WordPiece reads `getusername` as
    pieces (`get`, `##user`, `##name`) that are not the words the summary uses."""
    return _CAMEL.sub(" ", text)


def encode_joined(tokenizer, texts: list[str], joiner: int) -> list[np.ndarray]:
    """Token ids of each target with its camelCase identifiers written as their split words and
    `joiner` between the parts (`getImageType returns` -> `get <j> image <j> type returns`).

    With split sources (`split_identifiers`) the copy then writes an identifier from the source's
    own words: as written, a lower-casing WordPiece cuts `getimagetype` into pieces (`get`, `##ima`,
    `##get`, ...) that no source has, and a Go summary opens with its function's name 179 times in
    200 (csn6 test). A part after a boundary is encoded with a leading space, as the split source
    has it (the same word-initial token for a byte-level BPE). `joined_text` is the way back.
    """
    pieces = [[p if i == 0 else " " + p for i, p in enumerate(_CAMEL.split(text))] for text in texts]
    flat = encode_texts(tokenizer, [p for parts in pieces for p in parts])
    out, at = [], 0
    glue = np.asarray([joiner], dtype=np.int32)
    for parts in pieces:
        ids = flat[at : at + len(parts)]
        at += len(parts)
        chunks = [ids[0]]
        for part in ids[1:]:
            chunks += [glue, part]
        out.append(np.concatenate(chunks))
    return out


def encode_summaries(tokenizer, texts: list[str], joiner: int) -> list[np.ndarray]:
    """Summaries as a model writes them: identifiers joined (`encode_joined`) where it has a joiner, as written (-1)."""
    return encode_joined(tokenizer, texts, joiner) if joiner >= 0 else encode_texts(tokenizer, texts)


def joined_text(tokenizer, ids: list[int], joiner: int) -> str:
    """A document's text from its token ids: the words on either side of each `joiner` written as one
    (`encode_joined`'s way back, lower-cased as the tokenizer writes); -1: the tokenizer's decode alone."""
    if joiner < 0:
        return tokenizer.decode(ids, skip_special_tokens=True).strip()
    segments, current = [], []
    for token in ids:
        if token == joiner:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    return "".join(tokenizer.decode(part, skip_special_tokens=True).strip() for part in segments).strip()


def model_sources(sources: list[str], split: bool) -> list[str]:
    """The source texts a model reads: as given, or with identifiers split (`Seq2SeqSpec.split_identifiers`)."""
    return [split_identifiers(s) for s in sources] if split else sources


def short_name(qualified: str) -> str:
    """A function's own name from a qualified one (`Permissions.Validate` -> `Validate`), as its
    summary names it."""
    return qualified.rsplit(".", 1)[-1].strip()


def name_opening_languages(pairs: Pairs, share: float = 0.5) -> list[str]:
    """The languages in which more than `share` of the summaries open with the function's own name
    (case aside): Go's, whose doc comments begin with the name declared by convention (Effective Go;
    43 of 50 csn6 valid summaries do), and none of csn6's five others (at most 1 in 50)."""
    opened: Counter = Counter()
    total: Counter = Counter()
    for language, name, targets in zip(pairs.languages, pairs.names, pairs.targets):
        if not language:
            continue
        total[language] += 1
        words = targets[0].split()
        opened[language] += bool(name and words and words[0].lower() == name.lower())
    return sorted(lang for lang in total if opened[lang] > share * total[lang])


def read_csn(data: Path, split: str, languages: list[str], max_records: int) -> Pairs:
    out = Pairs([], [], [])
    counters: dict[str, int] = {}
    for lang, _, record in iter_corpus(data, (split,), languages or None, max_records, ReadReport()):
        n = counters[lang] = counters.get(lang, 0) + 1
        out.ids.append(f"{lang}-{n - 1}")
        out.sources.append(source_text(record["code_tokens"]))
        out.targets.append([target_text(record["docstring_tokens"])])
        out.languages.append(lang)
        out.repos.append(str(record.get("repo", "")))
        out.names.append(short_name(str(record.get("func_name", ""))))
    if not out.ids:
        raise UserError(f"{data}: no {split} records")
    return out


def read_tree(paths: list[Path], languages: list[str], max_records: int) -> tuple[Pairs, list[dict[str, object]]]:
    """Every function with a body in source trees (the corpus extractor's; tests and vendored
    folders skipped as it skips them), as sources to document: ids are `path:start-end`, the
    targets their existing doc comments ("" where there is none). Also each function's place."""
    # Imported here: tree-sitter and the grammars only for a source tree (csn and CodeNN files need none).
    from codebert.corpus.extract import read_source, walk
    from codebert.corpus.functions import parse_functions
    from codebert.corpus.languages import SPECS

    out, where, reasons = Pairs([], [], []), [], Counter()
    for path in paths:
        for src in walk([path], tuple(languages) if languages else tuple(sorted(SPECS)), "top", reasons):
            text, _ = read_source(src.path)
            if text is None:
                continue
            functions, _ = parse_functions(text.encode("utf-8"), src.language)
            for fn in functions:
                if not fn.code_tokens or fn.is_stub:
                    continue
                out.ids.append(f"{src.path}:{fn.start_line}-{fn.end_line}")
                out.sources.append(source_text(fn.code_tokens))
                out.targets.append([" ".join(fn.docstring.split())])
                out.languages.append(src.language)
                out.repos.append("")
                out.names.append(short_name(fn.name))
                where.append({"location": out.ids[-1], "name": fn.name, "language": src.language})
                if max_records and len(out.ids) >= max_records:
                    return out, where
    if not out.ids:
        raise UserError(f"{', '.join(map(str, paths))}: no function with a body found")
    return out, where


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
        out.languages.append("")
        out.repos.append("")
        out.names.append("")
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
    exemplars: list[np.ndarray] | None = None  # retrieved summaries read before the code (`exemplars.py`; None: none)

    def __len__(self) -> int:
        return len(self.sources)

    def lengths(self, max_length: int) -> np.ndarray:
        """The batches' sorting key: the source's length in bins of 32 tokens, then the target's.

        A step costs both sides' padded lengths, and the decoder's positions cost more than the
        encoder's (each runs forward and backward): sorting by the source alone left a batch's
        targets at the longest one's length (64), three times their mean (21 on csn6)."""
        sources = np.minimum(np.array([len(s) for s in self.sources]) + 2, max_length)
        targets = np.array([len(t) for t in self.targets]) + 2
        return (sources // 32) * 100_000 + np.minimum(targets, 99_999)


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


def source_input(code_ids: np.ndarray, max_length: int, layout: Layout = ROBERTA, exemplar_ids: np.ndarray | None = None,
                 exemplar_tokens: int = 0) -> list[int]:
    """What the encoder reads: the code in the single layout (the paper's), or with `exemplar_tokens`
    the retrieved exemplar (cut to that many tokens) and the code as a pair (`<s> exemplar </s></s>
    code </s>`, `[CLS] exemplar [SEP] code [SEP]`), the code cut to fit `max_length`."""
    if not exemplar_tokens:
        return wrap(code_ids, max_length, layout)
    exemplar = [] if exemplar_ids is None else exemplar_ids.tolist()
    return layout.pair(exemplar, code_ids.tolist(), max_length, nl_length=exemplar_tokens).input_ids


def bos_eos(layout: Layout) -> tuple[int, int]:
    """The tokens a target starts and ends with: the first and last special token of a single input."""
    return layout.prefix[0], layout.suffix[-1]
