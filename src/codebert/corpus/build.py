"""`codebert corpus extract`: source trees in, a CodeSearchNet-layout corpus out.

extract (parallel) -> exact de-duplication -> split by repository -> within-split de-duplication
-> leakage removal (same doc summary, near-duplicate code) -> atomic writes -> report.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.corpus import dedupe, split
from codebert.corpus.extract import RepoUnit, extract_all, walk
from codebert.corpus.jsonl import SPLITS, UNIMODAL, write_jsonl
from codebert.corpus.languages import DEFAULT_LANGUAGES, SPECS
from codebert.errors import UserError
from codebert.tables import format_table

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    paths: list[Path] = option(help="source folders or files to extract from (git checkouts welcome)", positional=True, metavar="PATH")
    out: Path = option(help="output corpus folder: <out>/<language>/{train,valid,test,unimodal}.jsonl.gz")
    languages: list[str] = option(list(DEFAULT_LANGUAGES), "languages to extract (csharp is available too)")
    repo_unit: RepoUnit = option("top", "repository of a file outside any git checkout: top = first entry below PATH, root = PATH itself")
    valid_fraction: float = option(0.1, "share of bimodal records (by repository) for the validation split")
    test_fraction: float = option(0.1, "share of bimodal records (by repository) for the test split")
    seed: int = option(0, "seed of the repository split order")
    near_duplicate_jaccard: float = option(0.8, "drop a valid/test function whose code-token set has this Jaccard similarity with a train or unimodal one")
    workers: int = option(0, "parallel extraction processes; 0 = one per core")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = []
        unknown = [lang for lang in self.languages if lang not in SPECS]
        if unknown:
            problems.append(f"--languages: unknown {', '.join(unknown)} (known: {', '.join(SPECS)})")
        for path in self.paths:
            if not path.exists():
                problems.append(f"PATH {path}: does not exist")
        for name in ("valid_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            problems.append("--valid-fraction + --test-fraction must leave room for train (< 1)")
        if not 0 < self.near_duplicate_jaccard <= 1:
            problems.append("--near-duplicate-jaccard: must be in (0, 1]")
        if self.workers < 0:
            problems.append("--workers: must be >= 0")
        if self.out.exists() and not self.out.is_dir():
            problems.append(f"--out {self.out}: exists and is not a folder")
        return problems


def _split_language(
    bimodal: list[dict[str, Any]], unimodal: list[dict[str, Any]], cfg: ExtractConfig, reasons: Counter
) -> dict[str, list[dict[str, Any]]]:
    """Split one language's records by repository and remove duplicates and leaks."""
    seen: set[bytes] = set()
    # Documented functions win over undocumented copies of the same code.
    bimodal = dedupe.drop_exact_duplicates(bimodal, seen, reasons)
    unimodal = dedupe.drop_exact_duplicates(unimodal, seen, reasons)

    fractions = {"train": 1 - cfg.valid_fraction - cfg.test_fraction, "valid": cfg.valid_fraction, "test": cfg.test_fraction}
    sizes = Counter(r["repo"] for r in bimodal)
    # Repositories with only undocumented code belong to train (they can only feed unimodal).
    assignment = split.assign_repositories(sizes, fractions, cfg.seed)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in (*SPLITS, UNIMODAL)}
    for record in bimodal:
        out[assignment[record["repo"]]].append(record)
    for record in unimodal:
        if assignment.get(record["repo"], "train") == "train":
            out[UNIMODAL].append(record)
        else:
            reasons["function:unimodal_outside_train"] += 1

    train_summaries = {dedupe.summary_key(r) for r in out["train"]}
    references = out["train"] + out[UNIMODAL]
    for name in ("valid", "test"):
        kept, summaries = [], set()
        for record in out[name]:
            key = dedupe.summary_key(record)
            if key in train_summaries:
                reasons["function:leak_same_doc"] += 1
            elif key in summaries:  # the same query twice would have two right answers
                reasons["function:duplicate_query"] += 1
            else:
                summaries.add(key)
                kept.append(record)
        leaks = dedupe.near_duplicate_mask(references, kept, cfg.near_duplicate_jaccard)
        reasons["function:leak_near_duplicate"] += sum(leaks)
        out[name] = [r for r, leak in zip(kept, leaks) if not leak]
    for name, records in out.items():
        partition = "train" if name == UNIMODAL else name
        for record in records:
            record["partition"] = partition
    return out


def main(cfg: ExtractConfig) -> dict[str, Any]:
    start = time.perf_counter()
    reasons: Counter = Counter()  # (language, "level:why") -> count
    files = list(walk(cfg.paths, tuple(cfg.languages), cfg.repo_unit, reasons))
    if not files:
        raise UserError(f"no {', '.join(cfg.languages)} source files found under {', '.join(map(str, cfg.paths))}")
    workers = cfg.workers or os.cpu_count() or 1
    log.info("extracting %d files on %d process(es)", len(files), workers)
    result = extract_all(files, workers, progress=cfg.progress)
    extract_seconds = time.perf_counter() - start

    reasons.update(result.reasons)
    by_lang_bi: dict[str, list] = defaultdict(list)
    by_lang_uni: dict[str, list] = defaultdict(list)
    for record in result.bimodal:
        by_lang_bi[record["language"]].append(record)
    for record in result.unimodal:
        by_lang_uni[record["language"]].append(record)

    counts: dict[str, dict[str, int]] = {}
    for lang in cfg.languages:
        if not by_lang_bi[lang] and not by_lang_uni[lang]:
            continue
        lang_reasons: Counter = Counter()
        parts = _split_language(by_lang_bi[lang], by_lang_uni[lang], cfg, lang_reasons)
        reasons.update({(lang, key): n for key, n in lang_reasons.items()})
        counts[lang] = {}
        for name, records in parts.items():
            counts[lang][name] = write_jsonl(cfg.out / lang / f"{name}.jsonl.gz", records)
        for name in ("valid", "test"):
            if not parts[name] and (cfg.valid_fraction if name == "valid" else cfg.test_fraction) > 0:
                log.warning("%s: the %s split is empty (too few repositories with documented functions)", lang, name)
    if not counts:
        raise UserError("no function passed the filters; nothing written (see the skip reasons above)")
    by_language: dict[str, dict[str, int]] = defaultdict(dict)
    level_order = {"folder": 0, "file": 1, "function": 2}
    for (lang, key), n in sorted(reasons.items(), key=lambda item: (level_order[item[0][1].split(":")[0]], item[0][1])):
        by_language[key][lang] = n
    seconds = time.perf_counter() - start
    return {
        "out": str(cfg.out),
        "files": len(files),
        "counts": counts,
        "reasons": dict(by_language),  # {"level:why": {language: count}}
        "seconds": round(seconds, 2),
        "extract_seconds": round(extract_seconds, 2),
        "files_per_second": round(len(files) / extract_seconds, 1) if extract_seconds else None,
        "workers": workers,
    }


def render(figures: dict[str, Any]) -> str:
    """The human-readable report of an extraction."""
    rows = [
        [lang, *(c.get(s, 0) for s in (*SPLITS, UNIMODAL))] for lang, c in figures["counts"].items()
    ]
    languages = list(figures["counts"])
    reasons = [
        [*key.split(":", 1), *(per_lang.get(lang, 0) for lang in languages), sum(per_lang.values())]
        for key, per_lang in figures["reasons"].items()
    ]
    return "\n\n".join(
        [
            format_table(["language", *SPLITS, UNIMODAL], rows),
            format_table(["level", "reason", *languages, "all"], reasons),
            f"{figures['files']:,} files in {figures['extract_seconds']:.1f} s of extraction "
            f"({figures['files_per_second']} files/s on {figures['workers']} process(es)); "
            f"{figures['seconds']:.1f} s in all. Corpus written to {figures['out']}",
        ]
    )
