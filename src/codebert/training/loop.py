"""A generic training loop: steps, accumulation, precision, clipping, checkpoints, exact resume, DDP.

Nothing in this file knows about CodeBERT. The caller brings a model, a `loss_fn(model, batch)`
returning a dict with a "loss" tensor (other entries are logged), an endless batch stream with
`state_dict()` / `load_state_dict()`, a `save_model(model, folder)` that writes a self-describing
folder (with `load_model(model, folder)` to read it back when its keys are not the model's own),
and any other stateful objects (e.g. a masking RNG) whose state must survive a restart.

Checkpoints: `<out>/step-00000100/` holds what `save_model` writes, the resolved run config,
`steps.json` (the step it was saved at) and `training_state.pt` (optimizer, scheduler, every RNG,
the batch stream's position, the stateful objects); `<out>/final/` has no training state, nor has
`<out>/best/` (with `best_metric`: the model at the validation that scored highest so far). Folders
are written under a temporary name and renamed, so a run killed at any moment leaves only complete
checkpoints, and `resume="auto"` continues from the newest one exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from tqdm import tqdm

from codebert.config import option
from codebert.errors import UserError

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
STEPS_FILE = "steps.json"  # {"step": N}: in every checkpoint folder, final/ and best/ included


@dataclass
class LoopConfig:
    max_steps: int = option(1000, "optimizer steps to train for")
    max_minutes: float = option(0.0, "also stop (and save final/) after this much training time; 0: no limit")
    learning_rate: float = option(5e-4, "peak learning rate of AdamW")
    warmup_steps: int = option(100, "linear warm-up steps, then linear decay to 0 at max_steps")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm weights)")
    adam_beta2: float = option(0.98, "AdamW beta2 (RoBERTa's 0.98)")
    adam_epsilon: float = option(1e-6, "AdamW epsilon (RoBERTa's 1e-6)")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    grad_accumulation: int = option(1, "micro-batches summed into one optimizer step")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = option("auto", "autocast precision; auto: bf16 where the hardware has bf16 instructions (CUDA; CPU with AVX512-BF16/AMX), else fp32")
    log_every: int = option(10, "steps between metric lines")
    eval_every: int = option(0, "steps between validations (0: only at the end)")
    save_every: int = option(0, "steps between checkpoints (0: only final/)")
    keep_checkpoints: int = option(2, "newest step checkpoints to keep (older ones are deleted)")
    seed: int = option(0, "seed of every RNG (python, numpy, torch, data order, masking)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")
    best_metric: str = option("", "also keep best/: the model at the validation with the best value of this metric (e.g. mrr: "
                                  "the highest; loss or a name ending in _loss: the lowest); empty: no best/")
    frozen_steps: int = option(0, "first steps in which the part of the model the stage names as frozen gets no updates "
                                  "(pretrain --init: the pre-trained encoder, so that new heads settle first); 0: none")

    def validate_loop(self, steps_may_be_zero: bool = False) -> list[str]:
        problems = []
        for name in ("max_steps", "grad_accumulation", "log_every", "keep_checkpoints"):
            if name == "max_steps" and steps_may_be_zero and self.max_steps == 0:
                continue
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be >= 1")
        for name in ("warmup_steps", "eval_every", "save_every", "threads", "max_grad_norm", "weight_decay", "max_minutes",
                     "frozen_steps"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        if not self.learning_rate > 0:
            problems.append("--learning-rate: must be > 0")
        # AdamW raises on a beta2 outside [0, 1) only at the first step; epsilon 0 divides by zero.
        if not 0 <= self.adam_beta2 < 1:
            problems.append("--adam-beta2: must be in [0, 1)")
        if not self.adam_epsilon > 0:
            problems.append("--adam-epsilon: must be > 0")
        return problems


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 / AMX-BF16, Arm's BF16 extension


def cpu_runs_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 matrix instructions, from the flags the kernel lists.

    CPUs with AVX512-BF16 or AMX run bf16 matmuls up to twice as fast as fp32; CPUs without them
    (AVX2 only) emulate bf16 up to 100x slower. The answer must be the same every time a run is
    started on a machine: a timed race between the two, as this once was, flipped under load, so
    that a run and its resumption (or two runs of one seed) trained in different precisions.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False  # not Linux: no way to tell without timing, so the safe choice
    flags = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & CPU_BF16_FLAGS)


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision `auto` stands for on this device; fp16 exists on CUDA only."""
    if requested == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_runs_bf16() else "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array as a tensor, so that torch.load(weights_only=True) can read it back.
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    return sorted(p for p in out.glob("step-*") if (p / STATE_FILE).is_file())


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """`auto`: the newest checkpoint in `out` (None if there is none); a path: that checkpoint."""
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        found = checkpoints(out)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"--resume {resume}: not a checkpoint folder (no {STATE_FILE})")
    return path


def _param_groups(model: torch.nn.Module, weight_decay: float, learning_rate: float) -> list[dict]:
    """AdamW's groups: weight decay on matrices only; a model may hold `lr_scales` ({parameter-name
    prefix: factor}) for parts that learn at a fraction of the rate (a pre-trained layer beside new heads)."""
    scales: dict[str, float] = getattr(model, "lr_scales", {}) or {}
    # The two groups every run had before scales existed come first, in their order, so that older
    # checkpoints' optimizer states still load; scaled groups follow in parameter order.
    groups: dict[tuple[float, bool], list] = {(1.0, True): [], (1.0, False): []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((f for prefix, f in scales.items() if name.startswith(prefix)), 1.0)
        decays = not (param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name)
        groups.setdefault((scale, decays), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": learning_rate * scale}
            for (scale, decays), params in groups.items()]


def steps_for_epochs(epochs: float, batches_per_epoch: int, grad_accumulation: int) -> int:
    """Optimizer steps that make `epochs` passes over the data (at least one step)."""
    return max(1, math.ceil(epochs * batches_per_epoch / grad_accumulation))


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Warm-up from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load `weights` into `model`, every parameter accounted for (a one-line error otherwise).

    Tied weights are stored once, so a key may be missing when the parameter it names is the very
    object another, loaded key names; anything else missing or left over means a different model.
    """
    missing, unexpected = model.load_state_dict(weights, strict=False)
    state = model.state_dict(keep_vars=True)
    loaded = {id(state[k]) for k in weights if k in state}
    tied_keys = getattr(model, "_tied_weights_keys", None) or {}
    real_missing = [k for k in missing if id(state[k]) not in loaded and k not in tied_keys]
    if real_missing or unexpected:
        raise UserError(f"{source}: checkpoint does not match the model (missing {real_missing[:3]}, unexpected {unexpected[:3]})")


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """One safetensors file of a checkpoint; a one-line error where the folder lacks it."""
    if not file.is_file():
        raise UserError(f"{file.parent}: not a checkpoint of this model (no {file.name})")
    return load_file(str(file))


def load_folder_weights(model: torch.nn.Module, folder: Path) -> None:
    """Every safetensors file of `folder`, under the model's own state-dict keys."""
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    load_weights(model, weights, folder)


def lower_is_better(metric: str) -> bool:
    """Losses are minimised (`loss`, `valid_loss`, `mlm_loss`); every other metric (accuracy, MRR, BLEU) maximised."""
    return metric == "loss" or metric.endswith("_loss")


class Trainer:
    def __init__(
        self,
        cfg: LoopConfig,
        model: torch.nn.Module,
        loss_fn: Callable[[torch.nn.Module, Any], dict[str, Any]],
        batches: Any,
        out: Path,
        save_model: Callable[[torch.nn.Module, Path], None],
        load_model: Callable[[torch.nn.Module, Path], None] | None = None,
        evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        stateful: dict[str, Any] | None = None,
        run_config: dict[str, Any] | None = None,
        dist_info: Dist = Dist(),
        device: torch.device = torch.device("cpu"),
        frozen: list[torch.nn.Parameter] | None = None,
    ):
        self.cfg, self.loss_fn, self.batches, self.out = cfg, loss_fn, batches, out
        self.save_model, self.evaluate = save_model, evaluate
        # Reads back, on resume, the weights save_model wrote; the default suits a model saved
        # with its own state-dict keys (save_pretrained of the trained module itself).
        self.load_model = load_model or load_folder_weights
        self.stateful = stateful or {}
        self.run_config = run_config or {}
        self.dist, self.device = dist_info, device
        # Parameters held still for the first cfg.frozen_steps steps. Their gradients are dropped
        # after backward rather than switched off with requires_grad, so DDP (which fixes the set of
        # parameters it synchronises when it wraps the model) still syncs them once they move.
        self.frozen = list(frozen or [])
        if cfg.frozen_steps and not self.frozen:
            raise UserError("--frozen-steps: this stage names no part of the model to freeze")
        self.model = model.to(device)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, cfg.weight_decay, cfg.learning_rate), lr=cfg.learning_rate,
            betas=(0.9, cfg.adam_beta2), eps=cfg.adam_epsilon,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(cfg.warmup_steps, cfg.max_steps))
        self.wrapped = self.model
        if dist_info.world > 1:
            # Some heads sit idle for some objectives (the RTD head under MLM alone).
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
            )
        self.precision = resolve_precision(cfg.precision, device)
        log.info("precision: %s", self.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.best: float | None = None  # best validation value of cfg.best_metric so far (lower_is_better says which way)
        # The metric line being summed: the loss terms of the steps since the last line, and how many.
        # Saved with a checkpoint, so that the first line after a resume is the mean of the same steps
        # as the straight run's (a checkpoint between two lines would otherwise halve it).
        self.log_sums: dict[str, float] = {}
        self.log_steps = 0

    # ------------------------------------------------------------------------------ checkpoints
    def _write_checkpoint(self, name: str, with_state: bool) -> Path:
        final = self.out / name
        tmp = self.out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.save_model(self.model, tmp)
        (tmp / "run_config.json").write_text(json.dumps(self.run_config, indent=2, default=str))
        # The step a folder was saved at: run_config.json holds the planned max_steps, and final/ of
        # a run stopped by max_minutes would otherwise not say how far it got.
        (tmp / STEPS_FILE).write_text(json.dumps({"step": self.step}) + "\n")
        if with_state:
            state = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "batches": self.batches.state_dict(),
                "stateful": {k: v.state_dict() for k, v in self.stateful.items()},
                "best": self.best,
                "precision": self.precision,
                "log_window": {"sums": self.log_sums, "steps": self.log_steps},
            }
            torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        return final

    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        path = self._write_checkpoint(f"step-{self.step:08d}", with_state=True)
        log.info("checkpoint %s", path)
        for old in checkpoints(self.out)[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        self.load_model(self.model, path)
        # weights_only: the state holds tensors, numbers and strings, never code to run.
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # another model's parameter groups: a run of another kind in this folder
            raise UserError(f"{path}: checkpoint does not match the model ({exc})") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["batches"])
        for name, obj in self.stateful.items():
            obj.load_state_dict(state["stateful"][name])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best")
        window = state.get("log_window", {"sums": {}, "steps": 0})  # absent in checkpoints written before it
        self.log_sums, self.log_steps = dict(window["sums"]), int(window["steps"])
        # A run goes on in the precision it started in (`auto` could resolve otherwise on another machine).
        if self.cfg.precision == "auto" and state.get("precision", self.precision) != self.precision:
            log.info("precision: %s, as the run started (auto would pick %s here)", state["precision"], self.precision)
            self.precision = state["precision"]
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
            self.scaler.load_state_dict(state["scaler"])

    # ---------------------------------------------------------------------------------- logging
    def _log(self, record: dict[str, Any], writer) -> None:
        if not self.dist.main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(key, value, record["step"])

    def _truncate_metrics(self) -> None:
        """After a resume, drop metric lines written after the checkpoint (they will be redone)."""
        path = self.out / "metrics.jsonl"
        if not self.dist.main or not path.exists():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line).get("step", 0) <= self.step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def _tensorboard(self):
        if not self.dist.main:
            return None
        try:
            # Imported here: tensorboard (slow to import) only when a run writes its logs.
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1 if self.step else None)

    # ------------------------------------------------------------------------------------ train
    def fit(self, resume: str | None = None) -> dict[str, Any]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = resolve_resume(self.out, resume)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
            log.info("resumed from %s at step %d", checkpoint, self.step)
            self._truncate_metrics()
        writer = self._tensorboard()
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
            if self.precision != "fp32" else nullcontext()
        )
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (cfg.progress and self.dist.main))
        tokens_since, time_since = 0, time.perf_counter()
        started = time.perf_counter()
        last: dict[str, Any] = {}
        self.model.train()
        while self.step < cfg.max_steps:
            for micro in range(cfg.grad_accumulation):
                batch = next(self.batches)
                sync = micro == cfg.grad_accumulation - 1 or self.dist.world == 1
                context = nullcontext() if sync else self.wrapped.no_sync()
                with context:
                    with autocast:
                        out = self.loss_fn(self.wrapped, batch)
                    self.scaler.scale(out["loss"] / cfg.grad_accumulation).backward()
                tokens_since += batch.num_tokens() if hasattr(batch, "num_tokens") else 0
                for key, value in out.items():
                    value = value.detach() if isinstance(value, torch.Tensor) else value
                    self.log_sums[key] = self.log_sums.get(key, 0.0) + float(value) / cfg.grad_accumulation
            if self.step < cfg.frozen_steps:
                # No gradient, no update: AdamW skips a parameter whose grad is None (no moments,
                # no weight decay), and clipping measures only what will move.
                for param in self.frozen:
                    param.grad = None
            if cfg.max_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            self.log_steps += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                elapsed = time.perf_counter() - time_since
                record = {"step": self.step, "lr": self.scheduler.get_last_lr()[0]}
                record.update({k: v / self.log_steps for k, v in self.log_sums.items()})
                record["tokens_per_s"] = tokens_since * self.dist.world / elapsed if elapsed > 0 else 0.0
                self._log(record, writer)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k not in ("step", "lr")}, refresh=False)
                last = record
                self.log_sums, self.log_steps, tokens_since, time_since = {}, 0, 0, time.perf_counter()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                self._run_eval(writer)
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save_checkpoint()
            if cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes:
                log.warning("stopping at step %d: --max-minutes %s reached", self.step, cfg.max_minutes)
                break
        bar.close()
        final_eval = self._run_eval(writer)
        if self.dist.main:
            self._write_checkpoint("final", with_state=False)
        if writer is not None:
            writer.close()
        figures = {"step": self.step, **{k: v for k, v in last.items() if k != "step"}, **final_eval}
        if self.best is not None:
            figures[f"best_valid_{self.cfg.best_metric}"] = self.best
        # Plain numbers for reports and --json: a logged loss may still be a tensor.
        return {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in figures.items()}

    def _run_eval(self, writer) -> dict[str, float]:
        if self.evaluate is None or not self.dist.main:
            return {}
        self.model.eval()
        # Validation uses its own seeded RNG: it must not move the training RNGs.
        state = _rng_state()
        with torch.no_grad():
            metrics = self.evaluate(self.model)
        _set_rng_state(state)
        self.model.train()
        record = {"step": self.step, **{f"valid_{k}": v for k, v in metrics.items()}}
        self._log(record, writer)
        if self.cfg.best_metric:
            if self.cfg.best_metric not in metrics:
                raise UserError(f"--best-metric {self.cfg.best_metric}: validation reports only {', '.join(metrics)}")
            value = float(metrics[self.cfg.best_metric])
            if self.best is None or (value < self.best if lower_is_better(self.cfg.best_metric) else value > self.best):
                self.best = value
                self._write_checkpoint("best", with_state=False)
                log.info("best/ now holds step %d (%s %.4f)", self.step, self.cfg.best_metric, value)
        return {k: v for k, v in record.items() if k != "step"}
