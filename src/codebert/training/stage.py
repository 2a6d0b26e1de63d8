"""The one training-stage skeleton: what `pretrain`, `search finetune` and `code2nl finetune` share.

A stage brings its data, model, loss, validation and save format; this module does the rest, the
same way for each: processes and devices (torchrun or one process), threads, seeds, Hugging Face's
progress bars silenced, length-bucketed batches, a step budget from --max-steps or --epochs, and the
resumable `Trainer`. A new downstream task starts from `FinetuneConfig` and `TrainingStage.fit`
rather than from a copy of another task.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codebert.config import option, to_dict
from codebert.training.batches import BucketedBatches
from codebert.training.loop import (
    LoopConfig, Trainer, load_weights, read_weights, seed_everything, setup_distributed, steps_for_epochs,
)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class FinetuneConfig(LoopConfig):
    """The options every fine-tuning stage shares. Defaults are those of CodeBERT's fine-tuning
    scripts (AdamW without decay, no warm-up); a stage overrides what its paper section fixes."""

    model: str = option(help="pre-trained model to start from: a folder of ours or of any BERT/RoBERTa-family encoder, `minilm` (the packaged all-MiniLM-L6-v2), a hub id online")
    data: Path = option(help="corpus folder (CodeSearchNet layout) with train and valid splits")
    out: Path = option(help="run folder: checkpoints, best/ (the model to evaluate), final/, metrics.jsonl")
    language: list[str] = option([], "languages to fine-tune on (empty: all in the corpus)")
    from_scratch: bool = option(False, "random weights of --model's shape (the 'no pre-training' rows)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: after --epochs)")
    epochs: float = option(8.0, "passes over the training set when --max-steps is 0")
    learning_rate: float = option(5e-5, "peak learning rate of AdamW")
    warmup_steps: int = option(0, "linear warm-up steps (CodeBERT's scripts: 0)")
    weight_decay: float = option(0.0, "AdamW weight decay (CodeBERT's scripts: 0)")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_epsilon: float = option(1e-8, "AdamW epsilon (CodeBERT's scripts: 1e-8)")
    batch_size: int = option(64, "examples per micro-batch (the paper: 64)")
    dropout: float = option(0.1, "dropout during fine-tuning")
    max_records: int = option(0, "read at most this many records per language and split (0: all)")
    valid_examples: int = option(1000, "valid examples to validate on (0: all)")
    resume: str | None = option(None, "auto: continue from the newest checkpoint in --out; or a checkpoint folder")

    def validate_finetune(self, min_batch: int = 1) -> list[str]:
        """The checks of the shared options (a stage adds its own)."""
        problems = self.validate_loop(steps_may_be_zero=True)
        if self.max_steps == 0 and not self.epochs > 0:
            problems.append("--epochs: must be > 0 when --max-steps is 0")
        if self.batch_size < min_batch:
            problems.append(f"--batch-size: must be >= {min_batch}")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout: must be in [0, 1)")
        for name in ("max_records", "valid_examples"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        return problems


def load_wrapped_encoder(model: torch.nn.Module, folder: Path, extra: Path | None = None) -> None:
    """Read back a model whose `encoder` was saved as a plain Hugging Face folder (so that
    `AutoModel` opens it), plus, optionally, a file of the wrapper's own weights under its keys."""
    weights = {f"encoder.{k}": v for k, v in read_weights(folder / "model.safetensors").items()}
    if extra is not None:
        weights.update(read_weights(extra))
    load_weights(model, weights, folder)


class TrainingStage:
    """One run of a training stage. Creating it sets up processes, threads and seeds (before the
    stage builds its model, so that random heads are reproducible); `fit` trains.

    `cfg` is the stage's config: a `LoopConfig` with `out`, `resume` and `batch_size` (and `epochs`
    where --max-steps may be 0).
    """

    def __init__(self, cfg: LoopConfig):
        # Imported here: transformers only to quiet its progress bars: the loop does not need it.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per checkpoint write would bury ours
        self.cfg = cfg
        self.dist, self.device = setup_distributed()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)

    def fit(
        self, model: torch.nn.Module, loss_fn: Callable, corpus, collate_fn: Callable, max_length: int,
        save_model: Callable[[torch.nn.Module, Path], None], *, load_model: Callable | None = None,
        evaluate: Callable | None = None, stateful: dict[str, Any] | None = None, frozen: list | None = None,
        best_metric: str | None = None, groups=None,
    ) -> dict[str, Any]:
        """Train `model` on batches of `corpus` (see `BucketedBatches`; `groups`: one group id per
        example, each batch from one group) until the step budget or --max-minutes; returns the
        loop's figures plus `examples` and `steps_planned`."""
        cfg = self.cfg
        batches = BucketedBatches(corpus, cfg.batch_size, max_length, cfg.seed, self.dist.rank, self.dist.world,
                                  collate_fn=collate_fn, groups=groups)
        steps = cfg.max_steps or steps_for_epochs(cfg.epochs, batches.batches_per_epoch(), cfg.grad_accumulation)
        changes: dict[str, Any] = {"max_steps": steps}
        if best_metric is not None:
            changes["best_metric"] = best_metric
        loop = dataclasses.replace(cfg, **changes)
        log.info("%d training examples, %d steps (%.2f epochs)", len(corpus), steps,
                 steps * cfg.grad_accumulation / batches.batches_per_epoch())
        trainer = Trainer(loop, model, loss_fn, batches, cfg.out, save_model, load_model=load_model, evaluate=evaluate,
                          stateful=stateful, run_config=to_dict(loop), dist_info=self.dist, device=self.device,
                          frozen=frozen)
        figures = trainer.fit(cfg.resume)
        figures.update(examples=len(corpus), steps_planned=steps)
        return figures


def save_with_tokenizer(tokenizer, *extras) -> Callable[[torch.nn.Module, Path], None]:
    """The common save format: the model's own `save_pretrained` folder, its tokenizer beside it,
    then each `extra(folder)` (e.g. a spec file)."""

    def save(model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for extra in extras:
            extra(folder)

    return save
