"""`codebert average`: one model whose weights are the mean of several checkpoints of one run
(beyond the paper; issue 25's checkpoint averaging).

The last checkpoints of a run lie near each other on the loss surface; their mean usually scores at
least as well as any of them and moves less from one checkpoint to the next (Izmailov et al., 2018,
"Averaging Weights Leads to Wider Optima"). Only checkpoints of the same run are averaged: a mean
with the model a run started from pulls the weights back toward a model that was not trained for
the task. Every `*.safetensors` file the folders share (the encoder, a code-to-doc decoder) is
averaged tensor by tensor (floating-point ones; integer buffers are the last checkpoint's); every
other file (config, tokenizer, search_model.json, ...) is the last checkpoint's, and a training
state (optimizer, RNG) is not copied. Choose between the mean and `best/` on valid
(`codebert search evaluate --split valid`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codebert.config import option
from codebert.errors import UserError

SKIPPED = {"training_state.pt", "README.md", "model_card.json"}  # not the mean's: state of one step, a card of another model


@dataclass
class AverageConfig:
    checkpoints: list[Path] = option(help="checkpoint folders of one run (e.g. RUN/step-*), oldest first", positional=True, metavar="CHECKPOINT")
    out: Path = option(help="folder for the averaged model (must not exist)")

    def validate(self) -> list[str]:
        problems = [f"{p}: no such folder" for p in self.checkpoints if not p.is_dir()]
        if len(self.checkpoints) < 2:
            problems.append("give at least two checkpoints to average")
        if self.out.exists():
            problems.append(f"--out {self.out}: exists; choose a new folder")
        return problems


def average_tensors(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of state dicts with the same keys and shapes (float tensors, in float64
    then cast back; other tensors from the last state)."""
    # Imported here: torch only when averaging (`average --help` stays instant).
    import torch

    keys = set(states[0])
    for n, state in enumerate(states[1:], 2):
        if set(state) != keys:
            raise UserError(f"checkpoint {n} has other weights than the first ({len(set(state) ^ keys)} names differ): not one run's checkpoints")
    out = {}
    for key in sorted(keys):
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise UserError(f"{key}: shapes differ between the checkpoints: not one run's checkpoints")
        if tensors[-1].is_floating_point():
            out[key] = (sum(t.double() for t in tensors) / len(tensors)).to(tensors[-1].dtype)
        else:
            out[key] = tensors[-1]
    return out


def main(cfg: AverageConfig) -> dict[str, Any]:
    # Imported here: torch (under safetensors.torch) only when averaging.
    from safetensors.torch import load_file, save_file

    last = cfg.checkpoints[-1]
    weight_files = sorted(p.name for p in last.glob("*.safetensors"))
    if not weight_files:
        raise UserError(f"{last}: no *.safetensors weights")
    for folder in cfg.checkpoints[:-1]:
        missing = [name for name in weight_files if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{folder}: no {', '.join(missing)} (the last checkpoint has it)")
    tmp = cfg.out.parent / f".{cfg.out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in last.iterdir():
        if item.name in SKIPPED or item.name in weight_files:
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    tensors = 0
    for name in weight_files:
        mean = average_tensors([load_file(str(folder / name)) for folder in cfg.checkpoints])
        save_file({k: v.contiguous() for k, v in mean.items()}, str(tmp / name), metadata={"format": "pt"})
        tensors += len(mean)
    (tmp / "averaged_from.txt").write_text("".join(f"{p.resolve()}\n" for p in cfg.checkpoints))
    tmp.rename(cfg.out)
    return {"out": str(cfg.out), "checkpoints": len(cfg.checkpoints), "files": weight_files, "tensors": tensors}


def render(figures: dict[str, Any]) -> str:
    return (f"{figures['checkpoints']} checkpoints averaged ({', '.join(figures['files'])}, {figures['tensors']} tensors); "
            f"averaged model in {figures['out']}")
