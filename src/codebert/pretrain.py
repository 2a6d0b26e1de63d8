"""`codebert pretrain`: MLM, RTD or MLM+RTD pre-training (paper §3.4), from scratch or a checkpoint.

One optimizer step = one forward pass over a batch that stacks two views of the data:
  * MLM rows: the bimodal pairs with 15% of NL and 15% of code positions replaced by <mask>;
  * RTD rows: the same pairs (and unimodal code) with those positions replaced by samples of the
    NL and code n-gram generators, every non-padding position labelled original/replaced.
loss = mlm_weight * L_MLM + rtd_weight * L_RTD (the paper: a plain sum, both weights 1).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from codebert import objectives
from codebert.config import option, to_dict
from codebert.errors import UserError
from codebert.generators import NgramGenerator, gather_contexts
from codebert.backbone import load_tokenizer, max_tokens
from codebert.inputs import Layout
from codebert.modeling import ModelConfig, load_model, new_model
from codebert.pretrain_data import Batch, BucketedBatches, EncodedCorpus, collate, encode_corpus
from codebert.report import numeric_table
from codebert.train_loop import LoopConfig, Trainer, seed_everything, setup_distributed

log = logging.getLogger(__name__)

Objective = Literal["mlm", "rtd", "mlm+rtd"]


@dataclass(kw_only=True)
class PretrainConfig(LoopConfig):
    data: Path = option(help="corpus folder (CodeSearchNet layout): train, valid and unimodal files")
    out: Path = option(help="run folder: step-NNNNNNNN/ checkpoints, final/, metrics.jsonl, tensorboard/")
    objective: Objective = option("mlm+rtd", "pre-training objective")
    tokenizer: Path | None = option(None, "tokenizer folder (default: the one inside --init)")
    generators: Path | None = option(None, "folder with nl.npz and code.npz from `codebert generators fit` (needed for rtd)")
    init: str | None = option(None, "start from this model (a folder of ours or of any BERT/RoBERTa-family encoder, `minilm` for the packaged all-MiniLM-L6-v2, a hub id online) instead of from scratch")
    resume: str | None = option(None, "auto: continue from the newest checkpoint in --out; or a checkpoint folder")
    languages: list[str] = option([], "languages to train on (empty: all in the corpus)")
    max_records: int = option(0, "read at most this many records per language and file (0: all)")
    max_length: int = option(256, "tokens per example, NL and code as a pair in the tokenizer's layout, truncated longest first")
    batch_size: int = option(32, "examples per micro-batch per process")
    mask_rate: float = option(0.15, "share of NL and of code positions selected (paper: 15%)")
    mask_style: Literal["mask", "bert"] = option("mask", "mask: all selected -> <mask> (paper eqs. 3-4); bert: 80/10/10")
    mlm_weight: float = option(1.0, "weight of the MLM loss (paper: plain sum)")
    rtd_weight: float = option(1.0, "weight of the RTD loss (paper: plain sum; ELECTRA uses 50)")
    unimodal_rtd: bool = option(True, "also train RTD on unimodal code (paper §3.4)")
    modality: Literal["bimodal", "code"] = option(
        "bimodal", "bimodal: NL-code pairs (the paper); code: the docs dropped and unimodal code added, every row "
        "masked (the paper's 'pre-train w/ code only' baseline)")
    leave_one_out: bool = option(True, "generators leave out the occurrence being replaced where they counted it")
    valid_examples: int = option(500, "valid pairs for the MLM/RTD accuracy at each evaluation")
    hidden_size: int = option(768, "encoder width (ignored with --init)")
    num_hidden_layers: int = option(12, "encoder layers (ignored with --init)")
    num_attention_heads: int = option(12, "attention heads (ignored with --init)")
    intermediate_size: int = option(3072, "feed-forward width (ignored with --init)")
    dropout: float = option(0.1, "dropout of hidden states and attention (0 trains faster on CPU)")

    def model_shape(self, dropout: float | None = None) -> ModelConfig:
        """The encoder these options describe (dropout: override, e.g. 0 for a benchmark)."""
        rate = self.dropout if dropout is None else dropout
        return ModelConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            hidden_dropout_prob=rate, attention_probs_dropout_prob=rate,
        )

    def validate(self) -> list[str]:
        problems = self.validate_loop()
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.tokenizer is None and self.init is None:
            problems.append("--tokenizer: required when not starting from --init")
        if "rtd" in self.objective and self.generators is None:
            problems.append(f"--generators: required for --objective {self.objective}")
        if self.generators is not None and not (self.generators / "nl.npz").is_file():
            problems.append(f"--generators {self.generators}: no nl.npz/code.npz (run `codebert generators fit`)")
        if self.modality == "code" and self.objective != "mlm":
            problems.append("--modality code: the code-only baseline is pre-trained with --objective mlm")
        if not 0 < self.mask_rate < 1:
            problems.append("--mask-rate: must be in (0, 1)")
        if not 8 <= self.max_length <= 512:
            problems.append("--max-length: must be in [8, 512] (RoBERTa has 514 positions, BERT 512)")
        if self.batch_size < 1:
            problems.append("--batch-size: must be >= 1")
        if self.frozen_steps and self.init is None:
            problems.append("--frozen-steps: freezes the encoder of --init while new heads settle; without --init there is none")
        # The shape is checked even with --init (which ignores it): a bad value is a mistake either way.
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be >= 1")
        if self.hidden_size % max(self.num_attention_heads, 1):
            problems.append("--hidden-size must be a multiple of --num-attention-heads")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout: must be in [0, 1)")
        for name in ("mlm_weight", "rtd_weight"):
            if not getattr(self, name) >= 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        weights = {"mlm": self.mlm_weight, "rtd": self.rtd_weight}
        if all(weights[part] == 0 for part in self.objective.split("+")):
            problems.append(f"--mlm-weight/--rtd-weight: --objective {self.objective} has nothing to learn with its weights at 0")
        for name in ("valid_examples", "max_records"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must be >= 0")
        return problems


class TorchRng:
    """A torch.Generator with the state_dict interface the training loop saves."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


class Corruptor:
    """Masks and corrupts batches: the glue between objectives.py and the two generators."""

    def __init__(self, cfg: PretrainConfig, tokenizer, generators: dict[str, NgramGenerator] | None):
        self.cfg = cfg
        self.layout = Layout.of(tokenizer)
        if self.layout.mask_id is None:
            raise UserError("the tokenizer has no mask token: it cannot be used for MLM")
        self.mask_id = self.layout.mask_id
        self.vocab_size = len(tokenizer)
        self.generators = generators

    def masked(self, batch: Batch, rng: torch.Generator, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        selected = objectives.select_positions(batch.segments, self.cfg.mask_rate, rng, rows=rows)
        ids = objectives.mask_inputs(batch.input_ids, selected, self.mask_id, self.cfg.mask_style, rng, self.vocab_size,
                                     self.layout.special_ids)
        return ids, selected

    def corrupted(
        self, batch: Batch, rng: torch.Generator, rows: torch.Tensor, counted: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(corrupted ids, is_replaced, selected): selected positions replaced by generator samples.

        `counted`: the batch comes from the data the generators were fit on (the train split), so
        leave-one-out applies (NL of every pair; code of unimodal rows). False for valid data.
        """
        assert self.generators is not None
        selected = objectives.select_positions(batch.segments, self.cfg.mask_rate, rng, rows=rows)
        ids = batch.input_ids.numpy()
        segments = batch.segments.numpy()
        chosen = selected.numpy()
        samples = batch.input_ids.clone()
        uniform_all = torch.rand(int(chosen.sum()), generator=rng).numpy()
        used = 0
        for segment, name in ((objectives.NL, "nl"), (objectives.CODE, "code")):
            positions = np.argwhere(chosen & (segments == segment))  # (n, 2) rows of (batch, position)
            if len(positions) == 0:
                continue
            generator = self.generators[name]
            usable = (segments == segment) & ~chosen  # context: same segment, not itself replaced
            left, left_len, right, right_len = gather_contexts(ids, positions, usable, generator.context)
            leave_out = self.cfg.leave_one_out and counted
            if name == "nl":
                leave_out = np.full(len(positions), leave_out)  # the NL generator counted the train docs
            else:
                leave_out = leave_out & batch.unimodal.numpy()[positions[:, 0]]  # it counted unimodal code
            uniform = uniform_all[used : used + len(positions)]
            used += len(positions)
            proposals = generator.sample(left, left_len, right, right_len, ids[positions[:, 0], positions[:, 1]], leave_out, uniform)
            samples[positions[:, 0], positions[:, 1]] = torch.from_numpy(proposals)
        corrupted, is_replaced = objectives.corrupt(batch.input_ids, selected, samples)
        return corrupted, is_replaced, selected


def make_loss_fn(cfg: PretrainConfig, corruptor: Corruptor, rng: TorchRng, device: torch.device):
    use_mlm, use_rtd = "mlm" in cfg.objective, "rtd" in cfg.objective

    def loss_fn(model, batch: Batch) -> dict[str, Any]:
        bimodal = ~batch.unimodal
        # MLM reads pairs (paper §3.4); the code-only baseline masks every row, pairs having lost their docs.
        masked_rows = bimodal if cfg.modality == "bimodal" else torch.ones_like(bimodal)
        inputs, masks, mlm_rows = [], [], 0
        if use_mlm:
            masked, selected_m = corruptor.masked(batch, rng.generator, masked_rows)
            inputs.append(masked[masked_rows])
            masks.append(batch.attention_mask[masked_rows])
            mlm_rows = int(masked_rows.sum())
        if use_rtd:
            rtd_rows = torch.ones_like(bimodal) if cfg.unimodal_rtd else bimodal
            corrupted, is_replaced, selected_r = corruptor.corrupted(batch, rng.generator, rtd_rows)
            inputs.append(corrupted[rtd_rows])
            masks.append(batch.attention_mask[rtd_rows])
        input_ids = torch.cat(inputs).to(device)  # (B_mlm + B_rtd, T): both views in one forward
        attention = torch.cat(masks).to(device)
        mlm_positions = None
        if use_mlm:
            mlm_positions = torch.zeros_like(input_ids, dtype=torch.bool)
            mlm_positions[:mlm_rows] = selected_m[masked_rows].to(device)
        out = model(input_ids, attention, mlm_positions=mlm_positions, rtd=use_rtd)
        metrics: dict[str, Any] = {}
        loss = torch.zeros((), device=device)
        if use_mlm:
            targets = batch.input_ids[masked_rows][selected_m[masked_rows]].to(device)
            mlm = objectives.mlm_loss(out.mlm_logits, targets)
            correct, total = objectives.mlm_accuracy(out.mlm_logits.detach(), targets)
            metrics.update(mlm_loss=mlm.detach(), mlm_acc=correct / max(total, 1))
            loss = loss + cfg.mlm_weight * mlm
        if use_rtd:
            logits = out.rtd_logits[mlm_rows:]
            labels = is_replaced[rtd_rows].to(device)
            valid = attention[mlm_rows:].bool()
            rtd = objectives.rtd_loss(logits, labels, valid)
            correct, total = objectives.rtd_accuracy(logits.detach(), labels, valid)
            replaced = int(labels.sum()) / max(int(selected_r[rtd_rows].sum()), 1)
            metrics.update(rtd_loss=rtd.detach(), rtd_acc=correct / max(total, 1), replaced_rate=replaced)
            loss = loss + cfg.rtd_weight * rtd
        metrics["loss"] = loss
        return metrics

    return loss_fn


def make_evaluate(cfg: PretrainConfig, corruptor: Corruptor, valid: EncodedCorpus, device: torch.device):
    """Valid MLM accuracy (masked bimodal pairs) and RTD accuracy (corrupted pairs), fixed seed."""
    indices = np.arange(min(cfg.valid_examples, len(valid)))

    def evaluate(model) -> dict[str, float]:
        rng = torch.Generator().manual_seed(12345)
        sums = {"mlm_correct": 0, "mlm_total": 0, "rtd_correct": 0, "rtd_total": 0, "mlm_loss": 0.0}
        for start in range(0, len(indices), cfg.batch_size):
            batch = collate(valid, indices[start : start + cfg.batch_size], cfg.max_length, corruptor.layout)
            rows = torch.ones(len(batch.input_ids), dtype=torch.bool)
            masked, selected = corruptor.masked(batch, rng, rows)
            out = model(masked.to(device), batch.attention_mask.to(device), mlm_positions=selected.to(device))
            targets = batch.input_ids[selected].to(device)
            correct, total = objectives.mlm_accuracy(out.mlm_logits, targets)
            sums["mlm_correct"] += correct
            sums["mlm_total"] += total
            sums["mlm_loss"] += float(objectives.mlm_loss(out.mlm_logits, targets)) * total
            if corruptor.generators is not None:
                corrupted, is_replaced, _ = corruptor.corrupted(batch, rng, rows, counted=False)
                out = model(corrupted.to(device), batch.attention_mask.to(device), rtd=True)
                correct, total = objectives.rtd_accuracy(out.rtd_logits, is_replaced.to(device), batch.attention_mask.bool().to(device))
                sums["rtd_correct"] += correct
                sums["rtd_total"] += total
        metrics = {
            "mlm_acc": sums["mlm_correct"] / max(sums["mlm_total"], 1),
            "mlm_loss": sums["mlm_loss"] / max(sums["mlm_total"], 1),
        }
        if sums["rtd_total"]:
            metrics["rtd_acc"] = sums["rtd_correct"] / sums["rtd_total"]
        return metrics

    return evaluate


def load_generators(folder: Path | None) -> dict[str, NgramGenerator] | None:
    if folder is None:
        return None
    return {name: NgramGenerator.load(folder / f"{name}.npz") for name in ("nl", "code")}


def main(cfg: PretrainConfig) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per checkpoint write would bury ours
    dist_info, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.init)
    generators = load_generators(cfg.generators) if ("rtd" in cfg.objective or cfg.generators) else None
    if generators is not None:
        for name, generator in generators.items():
            if generator.vocab_size != len(tokenizer):
                raise UserError(f"{name} generator was fit for {generator.vocab_size} tokens, the tokenizer has {len(tokenizer)}")
    if cfg.init:
        model = load_model(cfg.init, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        if model.config.vocab_size != len(tokenizer):
            raise UserError(f"--init has {model.config.vocab_size} tokens, the tokenizer {len(tokenizer)}")
        if cfg.max_length > max_tokens(model.config):
            raise UserError(f"--max-length {cfg.max_length}: --init takes at most {max_tokens(model.config)} tokens")
    else:
        shape = cfg.model_shape()
        model = new_model(shape, len(tokenizer), tokenizer)
    log.info("model: %.1fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)

    code_only = cfg.modality == "code"
    with_unimodal = code_only or ("rtd" in cfg.objective and cfg.unimodal_rtd)
    train = encode_corpus(cfg.data, tokenizer, "train", cfg.languages, include_unimodal=with_unimodal, max_records=cfg.max_records, code_only=code_only)
    # Validation stays on pairs for every run, so that valid MLM accuracy compares across variants.
    valid = encode_corpus(cfg.data, tokenizer, "valid", cfg.languages, include_unimodal=False, max_records=cfg.max_records)
    corruptor = Corruptor(cfg, tokenizer, generators)
    batches = BucketedBatches(train, cfg.batch_size, cfg.max_length, cfg.seed, dist_info.rank, dist_info.world,
                              collate_fn=functools.partial(collate, layout=corruptor.layout))
    rng = TorchRng(cfg.seed * 1000 + dist_info.rank)

    def save_model(m, folder: Path) -> None:
        m.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    trainer = Trainer(
        cfg, model, make_loss_fn(cfg, corruptor, rng, device), batches, cfg.out, save_model,
        evaluate=make_evaluate(cfg, corruptor, valid, device), stateful={"masking_rng": rng},
        run_config=to_dict(cfg), dist_info=dist_info, device=device,
        # --frozen-steps (beyond the paper): the pre-trained encoder, word embeddings included (so
        # the MLM decoder tied to them too), holds still while the MLM head's transform and bias
        # and the RTD head learn from it.
        frozen=list(model.base_model.parameters()) if cfg.frozen_steps else None,
    )
    figures = trainer.fit(cfg.resume)
    figures.update(out=str(cfg.out / "final"), examples=len(train), objective=cfg.objective)
    return figures


def render(figures: dict[str, Any]) -> str:
    return numeric_table(figures) + f"\nmodel saved to {figures['out']}"
