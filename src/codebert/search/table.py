"""`codebert search table`: the Table-2-shaped MRR table from the results files of evaluate/baseline.

Rows are the result files in the order given (baselines first, by convention), columns the
languages found in them and the macro-average. With `--markdown FILE`, the table replaces the
text between `<!-- table2:start -->` and `<!-- table2:end -->` in FILE (added at the end if absent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.io import atomic_write
from codebert.errors import UserError
from codebert.tables import format_table

START, END = "<!-- table2:start -->", "<!-- table2:end -->"
LANGUAGE_ORDER = ["ruby", "javascript", "go", "python", "java", "php"]  # the paper's column order


@dataclass
class SearchTableConfig:
    results: list[Path] = option(help="results JSON files (search evaluate --out, search baseline's results.json)", positional=True, metavar="RESULTS")
    markdown: Path | None = option(None, "also put the table into this Markdown file, between the table2 markers")


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a results file ({exc})") from None


def markdown_table(results: list[dict[str, Any]]) -> str:
    languages = sorted({lang for r in results for lang in r["languages"]}, key=lambda l: (l not in LANGUAGE_ORDER, LANGUAGE_ORDER.index(l) if l in LANGUAGE_ORDER else 0, l))
    header = "| model | " + " | ".join(languages) + " | macro-avg |"
    lines = [header, "|" + "---|" * (len(languages) + 2)]
    for r in results:
        cells = [f"{r[lang]:.4f}" if lang in r else "–" for lang in languages]
        complete = all(lang in r for lang in languages)
        macro = f"{r['macro_mrr']:.4f}" if complete else f"({r['macro_mrr']:.4f})"
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {macro} |")
    protocols = {json.dumps(r.get("protocol", {}), sort_keys=True) for r in results}
    if len(protocols) > 1:
        lines.append("\nThe rows were evaluated under different protocols: " + "; ".join(sorted(protocols)))
    return "\n".join(lines)


def main(cfg: SearchTableConfig) -> dict[str, Any]:
    results = [_read(p) for p in cfg.results]
    table = markdown_table(results)
    if cfg.markdown is not None:
        text = cfg.markdown.read_text(encoding="utf-8") if cfg.markdown.exists() else ""
        block = f"{START}\n{table}\n{END}"
        if START in text and END in text:
            text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        with atomic_write(cfg.markdown) as f:
            f.write(text)
    return {"table": table, "rows": len(results)}


def render(figures: dict[str, Any]) -> str:
    return figures["table"]


def write_results(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(json.dumps(figures, indent=2) + "\n")


def render_results(figures: dict[str, Any]) -> str:
    langs = figures["languages"]
    rows = [[lang, figures[lang], figures[f"{lang}_queries"]] for lang in langs]
    rows.append(["macro-average", figures["macro_mrr"], sum(figures[f"{lang}_queries"] for lang in langs)])
    text = format_table(["language", "MRR", "queries"], rows)
    extra = [[k, v] for k, v in figures.items() if any(k == f"{lang}_{s}" for lang in langs for s in ("full_mrr", "full_recall_at_10", "rerank_mrr", "pairs_per_s"))]
    if extra:
        text += "\n" + format_table(["figure", "value"], extra)
    return text
