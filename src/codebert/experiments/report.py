"""The report of `codebert reproduce`: the paper's tables and figures from the units' figures.

Writes OUT/report.md (Markdown: stage times, pre-training, Tables 2, 4, 5 and 6, the learning curves
of pre-training and of search fine-tuning, and which of the paper's orderings held) and
OUT/figures.json (every unit's figures, the tables' cells and the orderings, for scripts).
Rows and cells whose unit has not run yet are left out or shown as "–".
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from codebert.config import to_dict
from codebert.io import atomic_write
from codebert.errors import UserError
from codebert.tables import duration, format_table
from codebert.search.metrics import random_ranker_mrr
from codebert.search.table import LANGUAGE_ORDER, markdown_table

# The paper's relative claims, as (better, worse, claim). Fine-tuned tasks: Tables 2, 5 and 6 all
# order MLM+RTD > MLM > RTD > no pre-training, bimodal MLM > code-only, code-only from RoBERTa > RoBERTa.
ORDERINGS = [
    ("MLM+RTD", "MLM", "MLM+RTD beats MLM"),
    ("MLM", "RTD", "MLM beats RTD"),
    ("RTD", "no pre-training", "RTD beats no pre-training"),
    ("MLM", "code-only MLM", "bimodal MLM beats code-only MLM"),
    ("init + code-only MLM", "init", "pre-training on code beats the NL checkpoint"),
    ("init + MLM+RTD", "init + MLM", "from --init: MLM+RTD beats MLM"),
    ("init + MLM", "init + RTD", "from --init: MLM beats RTD"),
]
# Table 4 compares MLM models only: CodeBERT (MLM) > code-only > RoBERTa.
PROBING_ORDERINGS = [
    ("MLM", "code-only MLM", "bimodal MLM beats code-only MLM"),
    ("init + MLM", "init", "MLM from --init beats the NL checkpoint"),
    ("init + code-only MLM", "init", "code-only from --init beats the NL checkpoint"),
]
PROBE_SETTINGS = [("pl", "PL (2 choices)"), ("pl_preceding", "PL, preceding context only"), ("nl", "NL (4 choices)")]


def _ordered(languages: list[str]) -> list[str]:
    return sorted(languages, key=lambda l: (l not in LANGUAGE_ORDER, LANGUAGE_ORDER.index(l) if l in LANGUAGE_ORDER else 0, l))


def search_rows(budget, variants, languages: list[str], units: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 2 rows: baselines, then variants (per-language runs merged into one row); each with BM25
    fused in (the `search-hybrid/` units, beyond the paper) below the rows of the paper's kind."""
    rows = [units[f"search/{kind}"] for kind in budget.baselines if f"search/{kind}" in units]
    if "languages" in units.get("search/zero-shot", {}):
        rows.append(units["search/zero-shot"])
    for variant in variants:
        merged = _merged(units, f"search/{variant.slug}/", variant.name)
        if merged is not None:
            rows.append(merged)
    if "languages" in units.get("search-hybrid/zero-shot", {}):
        rows.append(units["search-hybrid/zero-shot"])
    for variant in variants:
        merged = _merged(units, f"search-hybrid/{variant.slug}/", None)
        if merged is not None:
            rows.append(merged)
    return rows


def _merged(units: dict[str, dict[str, Any]], prefix: str, label: str | None) -> dict[str, Any] | None:
    """One row from the units under `prefix` (one per language, or one for all); label: theirs if None."""
    merged: dict[str, Any] = {"label": label, "languages": []}
    for key, figures in units.items():
        if not key.startswith(prefix) or "languages" not in figures:
            continue
        for lang in figures["languages"]:
            merged[lang] = figures[lang]
            merged["languages"].append(lang)
        merged["protocol"] = figures.get("protocol", {})
        merged["label"] = label or figures.get("label")
    if not merged["languages"]:
        return None
    merged["macro_mrr"] = sum(merged[lang] for lang in merged["languages"]) / len(merged["languages"])
    return merged


def code2nl_rows(prefix: str, variants, units: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for v in variants:
        figures = units.get(f"{prefix}/{v.slug}", {})
        if "macro_bleu" not in figures:
            continue
        row = {"label": v.name, **figures}
        predictions = Path(row.get("run", "")) / "test" / "predictions.txt"
        if "distinct_predictions" not in row and predictions.is_file():  # a unit finished before the count existed
            docs = [line.split("\t", 1)[-1] for line in predictions.read_text(encoding="utf-8").splitlines()]
            row.update(distinct_predictions=len(set(docs)), predictions=len(docs))
        rows.append(row)
    ir = units.get(f"{prefix}/ir", {})  # the paper's IR row (a baseline, not a variant), last as in Tables 5 and 6
    if "macro_bleu" in ir:
        rows.append({**ir, "label": ir.get("label") or "IR"})
    return rows


def bleu_table(rows: list[dict[str, Any]]) -> str:
    languages = _ordered(sorted({lang for r in rows for lang in r["languages"]}))
    header = ["model", *languages] + (["overall"] if len(languages) > 1 else []) + ["distinct documents"]
    body = []
    for r in rows:
        cells = [f"{r[lang]:.2f}" if lang in r else "–" for lang in languages]
        distinct = f"{r['distinct_predictions']:,} of {r['predictions']:,}" if "distinct_predictions" in r else "–"
        body.append([r["label"], *cells] + ([f"{r['macro_bleu']:.2f}"] if len(languages) > 1 else []) + [distinct])
    return format_table(header, body)


def probe_tables(variants, units: dict[str, dict[str, Any]]) -> str:
    runs = [(v.name, units[f"probe/{v.slug}"]) for v in variants if "accuracy" in units.get(f"probe/{v.slug}", {})]
    if not runs:
        return ""
    counts = runs[0][1]["counts"]
    languages = _ordered(sorted({lang for per in counts.values() for lang in per if lang != "all"}))
    parts = ["Number of items:", "", format_table(
        ["setting", *languages, "all"],
        [[title, *(counts.get(s, {}).get(lang, 0) for lang in languages), counts.get(s, {}).get("all", 0)]
         for s, title in PROBE_SETTINGS if s in counts])]
    for setting, title in PROBE_SETTINGS:
        if setting not in counts:
            continue
        chance = runs[0][1]["chance"].get(setting)
        rows = [[name, *(_pct(f["accuracy"][setting].get(lang)) for lang in languages), _pct(f["accuracy"][setting].get("all"))]
                for name, f in runs if setting in f["accuracy"]]
        parts += ["", f"{title} — accuracy (chance {100 * chance:.0f}%):", "", format_table(["model", *languages, "all"], rows)]
    return "\n".join(parts)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def orderings(tasks: dict[str, dict[str, float]], claims=ORDERINGS, flags: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Each claim that the finished rows can test, per task: held or not, with the two figures.

    `flags[task][label]` says why a row's figure is no evidence (see `search_flags`, `probe_flags`,
    `code2nl_flags`); a comparison with a flagged side carries it as its caveat, held or not.
    """
    found = []
    for task, scores in tasks.items():
        task_flags = (flags or {}).get(task, {})
        for better, worse, claim in claims:
            if better in scores and worse in scores:
                caveat = "; ".join(f"{label}: {task_flags[label]}" for label in (better, worse) if label in task_flags)
                found.append({"task": task, "claim": claim, "better": better, "worse": worse,
                              "better_score": scores[better], "worse_score": scores[worse],
                              "held": bool(scores[better] > scores[worse]), "caveat": caveat})
    return found


def search_flags(scores: dict[str, float], group_size: int) -> dict[str, str]:
    """Rows whose MRR is under 3x a random ranking's: too close to the floor for one seed to order them.

    A heuristic flag, not a test (the spread between seeds is not measured by one run).
    """
    floor = random_ranker_mrr(group_size)
    return {label: f"MRR under 3x random ({floor:.4f})" for label, mrr in scores.items() if mrr < 3 * floor}


def probe_flags(run: dict[str, Any], setting: str) -> str | None:
    """Within two standard errors of chance, 2 * sqrt(p (1 - p) / n) for a guesser at chance p on n items."""
    n = run["counts"].get(setting, {}).get("all", 0)
    chance = run["chance"].get(setting)
    accuracy = run["accuracy"].get(setting, {}).get("all")
    if not n or chance is None or accuracy is None:
        return None
    band = 2 * math.sqrt(chance * (1 - chance) / n)
    return f"at chance ({100 * chance:.0f}% +/- {100 * band:.1f})" if abs(accuracy - chance) < band else None


def code2nl_flags(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Rows whose decoder wrote at most 5% distinct documents: their BLEU measures a constant."""
    # Imported here: torch (code2nl) and matplotlib only when the report needs them.
    from codebert.code2nl.stage import is_constant

    return {r["label"]: f"{r['distinct_predictions']} distinct of {r['predictions']} documents" for r in rows
            if "distinct_predictions" in r and is_constant(r["distinct_predictions"], r["predictions"])}


def _plot(runs: list[Path], labels: list[str], metrics: list[str], out: Path, title: str = "") -> str | None:
    # Imported here: torch (code2nl) and matplotlib only when the report needs them.
    from codebert.experiments import plot

    pairs = [(r, l) for r, l in zip(runs, labels) if (r / "metrics.jsonl").is_file()]
    if not pairs:
        return None
    try:
        plot.main(plot.PlotConfig(runs=[r for r, _ in pairs], labels=[l for _, l in pairs], metrics=metrics, out=out, title=title))
    except UserError:
        return None  # runs without the metric yet
    return out.name


def write(cfg, budget, variants, languages: list[str], units: dict[str, dict[str, Any]], started: datetime) -> dict[str, Any]:
    out = cfg.out
    lines = [
        f"# CodeBERT reproduction — scale `{cfg.scale}`",
        "",
        f"Command: `codebert {' '.join(sys.argv[1:]) if sys.argv[1:] else 'reproduce'}`  ",
        f"Data: `{cfg.data}` ({', '.join(_ordered(languages))}); started {started:%Y-%m-%d %H:%M} UTC, report written "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
        + (f" The init rows start from `{cfg.init}`." if cfg.init else ""),
        "",
        "Every figure below comes from a unit of this run (its figures are in `figures/` and `figures.json`);",
        "a unit not run yet is missing from its table.",
        "",
        "## Wall time per unit",
        "",
        format_table(["unit", "wall time"], [[k, duration(v.get("seconds", 0))] for k, v in units.items()]
                     + [["all units", duration(sum(v.get("seconds", 0) for v in units.values()))]]),
    ]

    # Pre-training
    trained = [v for v in variants if f"pretrain/{v.slug}" in units and v.objective not in ("none", "init")]
    rows = []
    for v in variants:
        f = units.get(f"pretrain/{v.slug}")
        if f is None:
            continue
        rows.append([v.name, int(f.get("step", 0)), _num(f.get("valid_mlm_acc")), _num(f.get("valid_rtd_acc")),
                     _num(f.get("valid_rtd_floor")), _num(f.get("valid_rtd_auc")), duration(f.get("seconds", 0))])
    lines += ["", "## Pre-training", "", format_table(["variant", "steps", "valid MLM accuracy", "valid RTD accuracy",
                                                      "RTD floor (share original)", "valid RTD AUC", "wall time"], rows)]
    curves = _plot([out / "pretrain" / v.slug for v in trained], [v.name for v in trained], ["mlm_loss", "rtd_loss", "valid_mlm_acc", "valid_rtd_auc"],
                   out / "pretrain_curves.png")
    if curves:
        lines += ["", f"![pre-training curves]({curves})"]

    # Table 2 and Figure 3
    table2 = search_rows(budget, variants, languages, units)
    search_scores = {r["label"]: r["macro_mrr"] for r in table2 if "macro_mrr" in r}
    lines += ["", "## Table 2: natural-language code search (MRR)", "",
              f"Fine-tuning: {'cross-encoder (the paper)' if budget.search_mode == 'cross' else 'bi-encoder (beyond the paper; cheap to evaluate on a CPU)'}, "
              f"{'one model per language' if budget.search_per_language else 'one model for all languages'}; "
              f"test groups of {budget.search_group_size:,} candidates"
              + (f", at most {budget.search_max_groups} per language" if budget.search_max_groups else "")
              + (f", {budget.search_queries_per_group} queries per group" if budget.search_queries_per_group else "") + "."]
    if table2:
        lines += ["", markdown_table(table2), "",
                  f"A random ranking scores {random_ranker_mrr(budget.search_group_size):.4f} "
                  f"(the expected MRR of a uniform rank among {budget.search_group_size:,} candidates)."]
    cross_rows = [{**units[key], "label": v.name} for v in variants for key in sorted(units)
                  if key.startswith(f"search-cross/{v.slug}/") and "languages" in units[key]]
    if cross_rows:
        lines += ["", "Cross-encoder (the paper's model), one model per language; test groups of "
                  f"{budget.search_group_size:,} candidates"
                  + (f", at most {budget.cross_max_groups} per language" if budget.cross_max_groups else "")
                  + (f", the first {budget.cross_queries_per_group} queries of each group ranked against all of its candidates"
                     if budget.cross_queries_per_group else "") + ":",
                  "", markdown_table(cross_rows)]
    metric = "valid_acc" if budget.search_mode == "cross" else "valid_mrr"
    # The paper's Figure 3 shows Python and Java.
    names = ["all"]
    if budget.search_per_language:
        names = [lang for lang in ("python", "java") if lang in languages] or languages[:2]
    for name in names:
        png = _plot([out / "search" / v.slug / name for v in variants], [v.name for v in variants], ["loss", metric],
                    out / f"search_curves_{name}.png", title=f"search fine-tuning ({name})")
        if png:
            lines += ["", f"Figure 3 shape, {name}: ![search fine-tuning curves, {name}]({png})"]

    # Table 4
    probes = probe_tables(variants, units)
    if probes:
        lines += ["", "## Table 4: NL-PL probing (zero-shot, MLM head)", "", probes]
    probe_scores = {s: {v.name: units[f"probe/{v.slug}"]["accuracy"][s]["all"] for v in variants
                        if s in units.get(f"probe/{v.slug}", {}).get("accuracy", {})} for s, _ in PROBE_SETTINGS}

    # Tables 5 and 6
    table5 = code2nl_rows("code2nl", variants, units)
    if table5:
        lines += ["", "## Table 5: code-to-documentation generation (smoothed BLEU-4)", "", bleu_table(table5)]
    table6 = code2nl_rows("unseen", variants, units)
    if table6:
        lines += ["", f"## Table 6: a language not in pre-training (`{cfg.unseen}`, smoothed BLEU-4)", "", bleu_table(table6)]
    elif cfg.unseen is None:
        lines += ["", "## Table 6", "", "Not run: pass `--unseen DIR`, a corpus of a language the models never saw (e.g. C#)."]
    else:
        lines += ["", f"## Table 6: a language not in pre-training (`{cfg.unseen}`)", "", "No `unseen/<variant>` unit has finished yet."]

    # Orderings
    tasks = {"code search (macro MRR)": search_scores, "code-to-doc (overall BLEU)": {r["label"]: r["macro_bleu"] for r in table5},
             "unseen language (BLEU)": {r["label"]: r["macro_bleu"] for r in table6}}
    probing = {f"probing {title}": probe_scores[s] for s, title in PROBE_SETTINGS}
    flags = {"code search (macro MRR)": search_flags(search_scores, budget.search_group_size),
             "code-to-doc (overall BLEU)": code2nl_flags(table5), "unseen language (BLEU)": code2nl_flags(table6)}
    for setting, title in PROBE_SETTINGS:
        flags[f"probing {title}"] = {v.name: flag for v in variants if setting in units.get(f"probe/{v.slug}", {}).get("accuracy", {})
                                     and (flag := probe_flags(units[f"probe/{v.slug}"], setting))}
    held = orderings(tasks, flags=flags) + orderings(probing, PROBING_ORDERINGS, flags=flags)
    lines += ["", "## The paper's orderings", ""]
    if held:
        lines.append(format_table(["task", "claim", "better", "worse", "held", "caveat"],
                                  [[h["task"], h["claim"], f"{h['better']} {h['better_score']:.4f}", f"{h['worse']} {h['worse_score']:.4f}",
                                    "yes" if h["held"] else "no", h["caveat"] or "–"] for h in held]))
        clean = sum(h["held"] and not h["caveat"] for h in held)
        lines += ["", f"{sum(h['held'] for h in held)} of {len(held)} held, {clean} of them without a caveat. A caveat names a "
                  "side whose figure is no evidence: an MRR under 3x a random ranking's, a probing accuracy within two "
                  "standard errors of chance, or a decoder writing at most 5% distinct documents (its BLEU scores a "
                  "constant). Each row is one run (one seed): a difference smaller than the spread between seeds, not "
                  "measured here, is no evidence either way."]
    else:
        lines.append("No pair of finished rows to compare yet.")

    report = out / "report.md"
    with atomic_write(report) as f:
        f.write("\n".join(lines) + "\n")
    everything = {"config": to_dict(cfg), "budget": to_dict(budget), "units": units, "orderings": held,
                  "tables": {"table2": table2, "table5": table5, "table6": table6, "probing": probe_scores}}
    figures_file = out / "figures.json"
    with atomic_write(figures_file) as f:
        f.write(json.dumps(everything, indent=2, default=str) + "\n")
    return {"report": str(report), "figures": str(figures_file), "orderings_held": sum(h["held"] for h in held),
            "orderings_held_without_caveat": sum(h["held"] and not h["caveat"] for h in held), "orderings": len(held)}


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}"
