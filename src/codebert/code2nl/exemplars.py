"""Retrieved exemplars (beyond the paper; `code2nl finetune --exemplar-tokens N`): the summary of
the training function nearest to a source, read by the encoder before the code.

Retrieval-augmented summarisation (Rencos, Zhang et al. 2020; REDCODER, Parvez et al. 2021): the
paper's IR baseline writes the nearest training function's summary as it is; here the decoder reads
it beside the code and may copy from it (the copy distribution covers every source sub-word), take
its words where the two functions do the same thing and leave them where they do not. Writing from
an exemplar is quicker to learn than writing from nothing, which is what a CPU's few steps need.

Nearness is BM25 over the code's sub-words (`codebert.bm25`, the Table-2 row's tokens): cheap enough
to retrieve for every training function (csn6's 120,000 in about a minute; a bi-encoder would
spend hours on 2 cores encoding them). One index per language, as the test's functions are
documented from their own language's training set. A training function's exemplar comes from
another repository: csn splits by repository, so a test function's nearest training function is
never from its own repository, and one from the same repository (an overload, a copy with its
doc) would teach the decoder to trust the exemplar more than test will let it.

The bank (each language's index and summaries) is saved in the model folder (EXEMPLAR_DIR), so a
model documents a user's code with no access to its training data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from codebert.bm25 import bm25_index, bm25_tokens
from codebert.corpus.jsonl import positions_by_language

log = logging.getLogger(__name__)

EXEMPLAR_DIR = "exemplars"
_SUMMARIES = "summaries.json"
_CANDIDATES = 8  # hits read per query to find one from another repository


def query_tokens(source: str) -> list[str]:
    """A source's BM25 query: its sub-words, each once (bm25s scores a query term once per occurrence:
    a long function's repeated names would outweigh its rarer words, and each costs a pass)."""
    return list(dict.fromkeys(bm25_tokens(source))) or ["<empty>"]


@dataclass
class ExemplarBank:
    indexes: dict[str, object]  # language -> bm25s.BM25 over its training functions' code
    summaries: dict[str, list[str]]  # language -> its training functions' summaries, in index order
    repos: dict[str, list[str]]  # language -> their repositories (empty when loaded: needed only in training)

    @staticmethod
    def build(sources: list[str], summaries: list[str], languages: list[str], repos: list[str] | None = None) -> ExemplarBank:
        bank = ExemplarBank({}, {}, {})
        for lang, members in positions_by_language(languages).items():
            bank.indexes[lang] = bm25_index([sources[i] for i in members])
            bank.summaries[lang] = [summaries[i] for i in members]
            bank.repos[lang] = [repos[i] for i in members] if repos else [""] * len(members)
        return bank

    def nearest(self, sources: list[str], languages: list[str], repos: list[str] | None = None) -> list[str]:
        """Each source's exemplar: the summary of the best BM25 match among its language's training
        functions whose repository is not the source's (`repos`; None: any); "" where the language
        has no index or no such match is among the best few."""
        out = [""] * len(sources)
        for lang, members in positions_by_language(languages).items():
            if lang not in self.indexes:
                log.warning("no exemplars for %d %s functions: the model was trained without that language", len(members), lang or "unnamed")
                continue
            index, summaries, bank_repos = self.indexes[lang], self.summaries[lang], self.repos.get(lang)
            k = min(_CANDIDATES, len(summaries))
            results, _ = index.retrieve([query_tokens(sources[i]) for i in members], k=k, show_progress=False)
            for row, i in zip(results, members):
                for j in row:
                    if repos is None or not bank_repos or bank_repos[int(j)] != repos[i]:
                        out[i] = summaries[int(j)]
                        break
        return out

    def save(self, folder: Path) -> None:
        """Each language's index and summaries under `folder/<language>/` (the model folder's
        EXEMPLAR_DIR; the checkpoint writer renames the whole folder into place)."""
        for lang, index in self.indexes.items():
            where = folder / (lang or "_")
            where.mkdir(parents=True, exist_ok=True)
            index.save(str(where), show_progress=False)
            (where / _SUMMARIES).write_text(json.dumps({"language": lang, "summaries": self.summaries[lang]}), encoding="utf-8")

    @staticmethod
    def load(folder: Path) -> ExemplarBank:
        import bm25s  # imported here, as codebert.bm25 does: only where an index is read

        bank = ExemplarBank({}, {}, {})
        for where in sorted(p for p in folder.iterdir() if (p / _SUMMARIES).is_file()):
            saved = json.loads((where / _SUMMARIES).read_text(encoding="utf-8"))
            bank.indexes[saved["language"]] = bm25s.BM25.load(str(where), show_progress=False)
            bank.summaries[saved["language"]] = saved["summaries"]
        return bank
