"""`codebert corpus stats DIR`: records, repositories and mean lengths per language and split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.corpus.jsonl import ALL_FILES, ReadReport, corpus_files, read_jsonl
from codebert.tables import format_table


@dataclass
class StatsConfig:
    data: Path = option(help="corpus folder in CodeSearchNet layout", positional=True, metavar="DIR")


def main(cfg: StatsConfig) -> dict[str, Any]:
    files = corpus_files(cfg.data)
    stats: dict[str, dict[str, dict[str, float]]] = {}
    report = ReadReport()
    for lang, splits in files.items():
        for split_name, path in splits.items():
            records = repos = 0
            seen_repos: set[str] = set()
            code_tokens = doc_tokens = 0
            for record in read_jsonl(path, report):
                records += 1
                seen_repos.add(record["repo"])
                code_tokens += len(record["code_tokens"])
                doc_tokens += len(record["docstring_tokens"])
            repos = len(seen_repos)
            stats.setdefault(lang, {})[split_name] = {
                "records": records,
                "repositories": repos,
                "mean_code_tokens": round(code_tokens / records, 1) if records else 0.0,
                "mean_doc_tokens": round(doc_tokens / records, 1) if records else 0.0,
            }
    return {"data": str(cfg.data), "stats": stats, "malformed_lines": len(report.skipped)}


def render(figures: dict[str, Any]) -> str:
    stats = figures["stats"]
    counts = [[lang, *(s.get(n, {}).get("records", 0) for n in ALL_FILES)] for lang, s in stats.items()]
    totals = ["total", *(sum(s.get(n, {}).get("records", 0) for s in stats.values()) for n in ALL_FILES)]
    repos = [[lang, *(s.get(n, {}).get("repositories", 0) for n in ALL_FILES)] for lang, s in stats.items()]
    lengths = [
        [lang, s.get("train", {}).get("mean_doc_tokens", 0.0), s.get("train", {}).get("mean_code_tokens", 0.0),
         s.get("unimodal", {}).get("mean_code_tokens", 0.0)]
        for lang, s in stats.items()
    ]
    parts = [
        "records\n" + format_table(["language", *ALL_FILES], [*counts, totals]),
        "repositories\n" + format_table(["language", *ALL_FILES], repos),
        "mean tokens\n" + format_table(["language", "doc (train)", "code (train)", "code (unimodal)"], lengths),
    ]
    if figures["malformed_lines"]:
        parts.append(f"{figures['malformed_lines']} malformed line(s) skipped (see the warnings above)")
    return "\n\n".join(parts)
