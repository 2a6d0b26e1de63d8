"""`codebert plot RUN...`: learning curves of one or more training runs, as one PNG.

Panels, by default those of pre-training: train MLM loss, train RTD loss, train RTD accuracy, valid
MLM accuracy, valid RTD accuracy; `--metrics` picks others from metrics.jsonl (e.g. `valid_mrr` of
search fine-tuning, the paper's Figure 3). Several runs (e.g. the mlm, rtd and mlm+rtd variants)
share the panels, one line each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.io import atomic_write
from codebert.errors import UserError

# RTD is drawn as AUC and loss, not accuracy: at a ~10% base rate, accuracy at the 0.5 threshold stays at
# the share of originals long after the head has started to rank replaced tokens higher.
PRETRAIN_PANELS = ["mlm_loss", "rtd_loss", "rtd_auc", "valid_mlm_acc", "valid_rtd_auc"]
TITLES = {
    "loss": "train loss",
    "mlm_loss": "train MLM loss",
    "rtd_loss": "train RTD loss",
    "rtd_acc": "train RTD accuracy",
    "rtd_auc": "train RTD AUC (0.5: no ranking)",
    "valid_rtd_auc": "valid RTD AUC (0.5: no ranking)",
    "valid_mlm_loss": "valid MLM loss",
    "valid_mlm_acc": "valid MLM accuracy",
    "valid_rtd_acc": "valid RTD accuracy",
    "valid_mrr": "valid MRR",
    "valid_acc": "valid accuracy",
    "valid_bleu": "valid BLEU-4",
}


@dataclass
class PlotConfig:
    runs: list[Path] = option(help="run folders (each with metrics.jsonl)", positional=True, metavar="RUN")
    out: Path | None = option(None, "PNG to write (default: <first run>/curves.png)")
    labels: list[str] = option([], "a legend label per run (default: the run folder names)")
    metrics: list[str] = option(PRETRAIN_PANELS, "metrics of metrics.jsonl to draw, one panel each (default: pre-training's)")
    title: str = option("", "a title above the panels")

    def validate(self) -> list[str]:
        problems = [f"RUN {run}: no metrics.jsonl" for run in self.runs if not (run / "metrics.jsonl").is_file()]
        if self.labels and len(self.labels) != len(self.runs):
            problems.append(f"--labels: {len(self.labels)} labels for {len(self.runs)} runs")
        return problems


def read_metrics(run: Path) -> list[dict[str, Any]]:
    records = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill; the rest of the log is still good
    return records


def main(cfg: PlotConfig) -> dict[str, Any]:
    # Imported here: matplotlib only when a figure is drawn.
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    # Imported here: matplotlib only when a figure is drawn.
    import matplotlib.pyplot as plt

    labels = cfg.labels or [run.name for run in cfg.runs]
    fig, axes = plt.subplots(1, len(cfg.metrics), figsize=(4 * len(cfg.metrics) + 1.6, 3.4), squeeze=False)
    axes = axes[0]
    drawn = 0
    for index, (run, label) in enumerate(zip(cfg.runs, labels)):
        records = read_metrics(run)
        for ax, key in zip(axes, cfg.metrics):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                steps, values = zip(*points)
                # One colour per run in every panel, even where a run lacks a metric.
                ax.plot(steps, values, label=label, color=f"C{index}", marker="o" if key.startswith("valid") else None, markersize=3)
                drawn += 1
            ax.set_title(TITLES.get(key, key))
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    if drawn == 0:
        raise UserError("the runs have no metrics to plot yet")
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="upper right")
    if cfg.title:
        fig.suptitle(cfg.title)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (4 * len(cfg.metrics) + 1.6), 1))
    out = cfg.out or cfg.runs[0] / "curves.png"
    with atomic_write(out, binary=True) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return {"out": str(out), "runs": [str(r) for r in cfg.runs]}


def render(figures: dict[str, Any]) -> str:
    return f"learning curves written to {figures['out']}"
