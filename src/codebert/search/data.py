"""Code-search data: query/code texts, balanced classification pairs, and the 1,000-candidate groups.

Texts are built as CodeBERT's code-search scripts build them (`codesearch/process_data.py`):
the query is the doc tokens joined by spaces; the code is the code tokens joined by spaces, with
line breaks inside a token (multi-line string literals) turned into spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codebert.corpus.jsonl import corpus_files, ReadReport, iter_corpus
from codebert.errors import UserError

GROUP_SIZE = 1000  # the paper: each query against its own code and 999 distractors


def format_code_token(token: str) -> str:
    """process_data.py's `format_str`: CRLF, CR and LF inside a token become spaces."""
    for newline in ("\r\n", "\r", "\n"):
        token = token.replace(newline, " ")
    return token


@dataclass
class SearchExamples:
    """Parallel lists: example i is (queries[i], codes[i]) from language languages[i]."""

    queries: list[str]
    codes: list[str]
    urls: list[str]
    languages: list[str]

    def __len__(self) -> int:
        return len(self.codes)

    def subset(self, indices) -> SearchExamples:
        return SearchExamples(*([column[i] for i in indices] for column in (self.queries, self.codes, self.urls, self.languages)))


def load_examples(data: Path, split: str, languages: list[str] | None = None, max_records: int = 0) -> SearchExamples:
    """Every record of one split (train, valid, test), in file order, languages sorted."""
    report = ReadReport()
    out = SearchExamples([], [], [], [])
    for lang, _, record in iter_corpus(data, (split,), languages or None, max_records, report):
        out.queries.append(" ".join(record["docstring_tokens"]))
        out.codes.append(" ".join(format_code_token(t) for t in record["code_tokens"]))
        out.urls.append(record.get("url", ""))
        out.languages.append(lang)
    if not len(out):
        raise UserError(f"{data}: no {split} records{' for ' + ', '.join(languages) if languages else ''}")
    return out


@dataclass
class ClassificationPairs:
    """The cross-encoder's training set: (query index, code index, label) triples over examples."""

    query: np.ndarray  # (N,) index of the example whose query is used
    code: np.ndarray  # (N,) index of the example whose code is used
    label: np.ndarray  # (N,) 1: the pair belongs together, 0: a made-up negative

    def __len__(self) -> int:
        return len(self.label)


def balanced_pairs(n: int, seed: int) -> ClassificationPairs:
    """Every positive pair once, plus one negative per positive: balanced classes (paper §4.1).

    A negative replaces either the query or the code of a positive with another example's,
    half the negatives each way (chosen at random, then exactly half rounded down replace the
    query). The replacement is drawn uniformly among the other examples, never the pair itself.
    """
    if n < 2:
        raise UserError("code-search fine-tuning needs at least 2 examples (negatives come from other pairs)")
    rng = np.random.default_rng(seed)
    own = np.arange(n)
    other = (own + rng.integers(1, n, size=n)) % n  # uniform over the n - 1 other examples
    replace_query = np.zeros(n, dtype=bool)
    replace_query[rng.permutation(n)[: n // 2]] = True
    neg_query = np.where(replace_query, other, own)
    neg_code = np.where(replace_query, own, other)
    return ClassificationPairs(
        query=np.concatenate([own, neg_query]),
        code=np.concatenate([own, neg_code]),
        label=np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]),
    )


def evaluation_groups(n: int, group_size: int = GROUP_SIZE, seed: int = 0) -> list[np.ndarray]:
    """The paper's test groups: indices shuffled as process_data.py does, cut into full groups.

    `np.random.seed(0); np.random.shuffle(idxs)` on `arange(n)`, then consecutive chunks of
    `group_size`; a last, smaller chunk is dropped. Within a group, query i's gold code is code i.
    """
    idxs = np.arange(n)
    np.random.RandomState(seed).shuffle(idxs)  # the legacy global-seed shuffle, bit for bit
    return [idxs[start : start + group_size] for start in range(0, n - group_size + 1, group_size)]


# Function words a person leaves out of a search box; the rest of a summary is what short queries keep.
STOPWORDS = frozenset("""a an the this that these those it its of to in on at by for from with into as and or but if
then else is are was were be been being do does did has have had will would can could should may might must not no
which who whom what when where how all any each some such than too very so only also given specified provided
returns return""".split())
_QUERY_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*|[0-9]+")


def short_queries(queries: list[str], words: int, seed: int = 0) -> list[str]:
    """Summaries cut to `words` content words (beyond the paper; issue 25's short natural queries).

    A query typed into a search box is shorter and less like a docstring than the summary it stands
    for: each summary keeps `words` of its words that are not function words (STOPWORDS), chosen
    at random (seeded: the same queries every run) and kept in their order; a summary with fewer
    content words keeps all of them, and one with none keeps its first `words` words.
    `words` = 0 keeps every summary as it is."""
    if words <= 0:
        return list(queries)
    rng = np.random.default_rng(seed)
    out = []
    for text in queries:
        tokens = _QUERY_WORD.findall(text)
        content = [i for i, t in enumerate(tokens) if t.lower() not in STOPWORDS]
        if not content:
            out.append(" ".join(tokens[:words]))
            continue
        keep = sorted(rng.choice(content, size=min(words, len(content)), replace=False)) if len(content) > words else content
        out.append(" ".join(tokens[i] for i in keep))
    return out


def languages_of(cfg_language: list[str], data: Path) -> list[str]:
    return sorted(cfg_language) if cfg_language else sorted(corpus_files(data))
