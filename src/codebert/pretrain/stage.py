"""`codebert pretrain`: MLM, RTD or MLM+RTD pre-training (paper §3.4), from scratch or a checkpoint.

One optimizer step = one forward pass over a batch that stacks two views of the data, built on one
selection of 15% of the NL and 15% of the code positions of every row (paper eqs. 1-2):
  * MLM rows: the bimodal pairs with the selected positions replaced by <mask> (eqs. 3-4);
  * RTD rows: the same pairs (and unimodal code) with the same positions replaced by samples of
    the NL and code n-gram generators (eqs. 7-11), every NL and code token labelled original or
    replaced.
--loss-reduction sum (the paper's eq. 14): loss = (mlm_weight * sum_MLM + rtd_weight * sum_RTD) / n,
n the batch's selected positions, weights 1; mean (ELECTRA's): mlm_weight * mean_MLM + rtd_weight *
mean_RTD, ELECTRA's rtd_weight 50 (objectives.py says which positions each sums over).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from codebert.pretrain import objectives
from codebert.config import option
from codebert import model_card
from codebert.errors import UserError
from codebert.corpus.jsonl import UNIMODAL
from codebert.pretrain.generators import NgramGenerator, counted_records, gather_contexts, leave_one_out_problem
from codebert.backbone import load_tokenizer, max_tokens
from codebert.inputs import Layout, PairStyle
from codebert.pretrain.model import ModelConfig, load_model, new_model
from codebert.pretrain.data import Batch, EncodedCorpus, collate, encode_corpus
from codebert.tables import numeric_table
from codebert.training.loop import LoopConfig
from codebert.training.stage import TrainingStage, save_with_tokenizer

log = logging.getLogger(__name__)

@dataclass(kw_only=True)
class PretrainConfig(LoopConfig):
    data: Path = option(help="corpus folder (CodeSearchNet layout): train, valid and unimodal files")
    out: Path = option(help="run folder: step-NNNNNNNN/ checkpoints, final/, metrics.jsonl, tensorboard/")
    objective: str = option("mlm+rtd", "pre-training objectives joined by '+' (registered: mlm, rtd; objectives.OBJECTIVES)")
    tokenizer: Path | None = option(None, "tokenizer folder (default: the one inside --init)")
    generators: Path | None = option(None, "folder with nl.npz and code.npz from `codebert generators fit` (needed for rtd)")
    init: str | None = option(None, "start from this model (a folder of ours or of any BERT/RoBERTa-family encoder, `minilm` for the packaged all-MiniLM-L6-v2, a hub id online) instead of from scratch")
    resume: str | None = option(None, "auto: continue from the newest checkpoint in --out; or a checkpoint folder")
    languages: list[str] = option([], "languages to train on (empty: all in the corpus)")
    max_records: int = option(0, "read at most this many records per language and file (0: all)")
    max_length: int = option(256, "tokens per example, NL and code as a pair, truncated longest first")
    pair_layout: PairStyle = option("codebert", "codebert: <s> NL </s> CODE </s>, one separator (CodeBERT's scripts, paper §3.2); "
                                    "tokenizer: the tokenizer's own pair template (RoBERTa: <s> NL </s></s> CODE </s>)")
    batch_size: int = option(32, "examples per micro-batch per process")
    mask_rate: float = option(0.15, "share of NL and of code positions selected (paper: 15%)")
    mask_style: Literal["mask", "bert"] = option("mask", "mask: all selected -> <mask> (paper eqs. 3-4); bert: 80/10/10")
    loss_reduction: objectives.Reduction = option(
        "sum", "sum: each loss summed over its positions, both divided by the batch's selected positions (the paper's "
        "eq. 14); mean: each averaged over its own positions (ELECTRA's; with --rtd-weight 50, ELECTRA's loss)")
    mlm_weight: float = option(1.0, "weight of the MLM loss (paper: plain sum)")
    rtd_weight: float = option(1.0, "weight of the RTD loss (paper: plain sum; ELECTRA: 50 with --loss-reduction mean)")
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
        try:
            objectives.parse(self.objective)
        except ValueError as exc:
            return problems + [str(exc)]
        if objectives.needs_generators(self.objective) and self.generators is None:
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
        if all(objective_weight(self, part.name) == 0 for part in objectives.parse(self.objective)):
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
        self.layout = Layout.of(tokenizer, cfg.pair_layout)
        if self.layout.mask_id is None:
            raise UserError("the tokenizer has no mask token: it cannot be used for MLM")
        self.mask_id = self.layout.mask_id
        self.vocab_size = len(tokenizer)
        self.generators = generators

    def masked(self, batch: Batch, selected: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """The batch's ids with the `selected` positions masked (`--mask-style`)."""
        return objectives.mask_inputs(batch.input_ids, selected, self.mask_id, self.cfg.mask_style, rng, self.vocab_size,
                                      self.layout.special_ids)

    def corrupted(self, batch: Batch, selected: torch.Tensor, rng: torch.Generator, counted: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted ids, is_replaced): the `selected` positions replaced by generator samples.

        `counted`: the batch comes from the data the generators were fit on (the train split), so
        leave-one-out applies (NL of every pair; code of unimodal rows). False for valid data.
        """
        assert self.generators is not None
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
        return objectives.corrupt(batch.input_ids, selected, samples)


def make_loss_fn(cfg: PretrainConfig, corruptor: Corruptor, rng: TorchRng, device: torch.device):
    """The loss of `--objective`: each named objective's view of the batch (objectives.OBJECTIVES),
    all built on one selection of positions, stacked into one forward pass, their losses added
    with their weights and reduced by `--loss-reduction`."""
    parts = objectives.parse(cfg.objective)
    uses_rtd_head = any(part.head == "rtd" for part in parts)

    def loss_fn(model, batch: Batch) -> dict[str, Any]:
        rows = [part.rows(batch, cfg) for part in parts]
        read = torch.stack(rows).any(dim=0)  # (B,) the rows any objective reads
        selected = objectives.select_positions(batch.segments, cfg.mask_rate, rng.generator, rows=read)
        views = [part.view(batch, part_rows, selected, corruptor, rng.generator) for part, part_rows in zip(parts, rows)]
        input_ids = torch.cat([view.input_ids for view in views]).to(device)  # (sum of rows, T): every view in one forward
        attention = torch.cat([batch.attention_mask[view.rows] for view in views]).to(device)
        types = None if batch.token_type_ids is None else torch.cat([batch.token_type_ids[view.rows] for view in views]).to(device)
        spans, start = [], 0
        mlm_positions = torch.zeros_like(input_ids, dtype=torch.bool) if any(p.head == "mlm" for p in parts) else None
        for part, view in zip(parts, views):
            spans.append((start, start + len(view.input_ids)))
            if part.head == "mlm":
                mlm_positions[start : start + len(view.input_ids)] = view.positions.to(device)
            start += len(view.input_ids)
        out = model(input_ids, attention, mlm_positions=mlm_positions, rtd=uses_rtd_head, token_type_ids=types)
        metrics: dict[str, Any] = {}
        loss = torch.zeros((), device=device)
        predicted = 0  # MLM logits come row-major over the stacked rows: each MLM view takes its count
        for part, view, (begin, end) in zip(parts, views, spans):
            if part.head == "mlm":
                count = int(view.positions.sum())
                logits = out.mlm_logits[predicted : predicted + count]
                predicted += count
            else:
                logits = out.rtd_logits[begin:end]
            part_loss, part_metrics = part.loss(logits, view, cfg.loss_reduction)
            metrics.update(part_metrics)
            loss = loss + objective_weight(cfg, part.name) * part_loss
        if cfg.loss_reduction == "sum":
            loss = loss / max(int(selected.sum()), 1)  # the one shared count: eq. 14's sums, at MLM's scale
        metrics["loss"] = loss
        return metrics

    return loss_fn


def objective_weight(cfg: PretrainConfig, name: str) -> float:
    """`--NAME-weight` where the config has it (mlm, rtd: the paper's plain sum, 1 each), else 1."""
    return getattr(cfg, f"{name.replace('-', '_')}_weight", 1.0)


def make_evaluate(cfg: PretrainConfig, corruptor: Corruptor, valid: EncodedCorpus, device: torch.device):
    """Valid MLM accuracy and loss (masked bimodal pairs) and RTD figures (the same positions
    corrupted: accuracy against its floor, AUC, loss against the base rate's), fixed seed."""
    indices = np.arange(min(cfg.valid_examples, len(valid)))

    def evaluate(model) -> dict[str, float]:
        rng = torch.Generator().manual_seed(12345)
        sums = {"mlm_correct": 0, "mlm_total": 0, "mlm_loss": 0.0}
        rtd_logits, rtd_labels = [], []
        for start in range(0, len(indices), cfg.batch_size):
            batch = collate(valid, indices[start : start + cfg.batch_size], cfg.max_length, corruptor.layout)
            selected = objectives.select_positions(batch.segments, cfg.mask_rate, rng)
            masked = corruptor.masked(batch, selected, rng)
            types = None if batch.token_type_ids is None else batch.token_type_ids.to(device)
            out = model(masked.to(device), batch.attention_mask.to(device), mlm_positions=selected.to(device), token_type_ids=types)
            targets = batch.input_ids[selected].to(device)
            correct, total = objectives.mlm_accuracy(out.mlm_logits, targets)
            sums["mlm_correct"] += correct
            sums["mlm_total"] += total
            sums["mlm_loss"] += float(objectives.mlm_loss(out.mlm_logits, targets, "sum"))
            if corruptor.generators is not None:
                corrupted, is_replaced = corruptor.corrupted(batch, selected, rng, counted=False)
                out = model(corrupted.to(device), batch.attention_mask.to(device), rtd=True, token_type_ids=types)
                text = batch.segments > 0  # the NL and code tokens (eq. 12); special tokens are always original
                rtd_logits.append(out.rtd_logits.float().cpu()[text])
                rtd_labels.append(is_replaced[text])
        metrics = {
            "mlm_acc": sums["mlm_correct"] / max(sums["mlm_total"], 1),
            "mlm_loss": sums["mlm_loss"] / max(sums["mlm_total"], 1),
        }
        if rtd_logits:
            logits, labels = torch.cat(rtd_logits), torch.cat(rtd_labels)
            metrics.update(objectives.RtdFigures.of(logits, labels, torch.ones_like(labels)).metrics())
        return metrics

    return evaluate


def check_leave_one_out(cfg: PretrainConfig, generators: dict[str, NgramGenerator], with_unimodal: bool) -> None:
    """Leave-one-out only against the generators' own counts: a one-line error otherwise (generators.py)."""
    reads = {"nl": "train", **({"code": UNIMODAL} if with_unimodal else {})}  # the code generator's LOO is for unimodal rows
    for name, split in reads.items():
        reading = counted_records(cfg.data, cfg.languages, split, cfg.max_records)
        problem = leave_one_out_problem(name, generators[name].meta, reading)
        if problem:
            raise UserError(f"--generators {cfg.generators}: {problem}; leave-one-out would subtract occurrences it never "
                            "counted: fit the generators on this --data/--languages/--max-records, or pass --no-leave-one-out")


def load_generators(folder: Path | None) -> dict[str, NgramGenerator] | None:
    if folder is None:
        return None
    return {name: NgramGenerator.load(folder / f"{name}.npz") for name in ("nl", "code")}


def main(cfg: PretrainConfig) -> dict[str, Any]:
    stage = TrainingStage(cfg)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.init)
    generators = load_generators(cfg.generators) if (objectives.needs_generators(cfg.objective) or cfg.generators) else None
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
    with_unimodal = code_only or (objectives.reads_unimodal(cfg.objective) and cfg.unimodal_rtd)
    if generators is not None and cfg.leave_one_out and objectives.needs_generators(cfg.objective):
        check_leave_one_out(cfg, generators, with_unimodal)
    train = encode_corpus(cfg.data, tokenizer, "train", cfg.languages, include_unimodal=with_unimodal, max_records=cfg.max_records, code_only=code_only)
    # Validation stays on pairs for every run, so that valid MLM accuracy compares across variants.
    valid = encode_corpus(cfg.data, tokenizer, "valid", cfg.languages, include_unimodal=False, max_records=cfg.max_records)
    corruptor = Corruptor(cfg, tokenizer, generators)
    rng = TorchRng(cfg.seed * 1000 + stage.dist.rank)
    figures = stage.fit(
        model, make_loss_fn(cfg, corruptor, rng, stage.device), train, functools.partial(collate, layout=corruptor.layout),
        cfg.max_length, save_with_tokenizer(tokenizer), evaluate=make_evaluate(cfg, corruptor, valid, stage.device),
        stateful={"masking_rng": rng},
        # --frozen-steps (beyond the paper): the pre-trained encoder, word embeddings included (so
        # the MLM decoder tied to them too), holds still while the MLM head's transform and bias
        # and the RTD head learn from it.
        frozen=list(model.base_model.parameters()) if cfg.frozen_steps else None,
    )
    figures.update(out=str(cfg.out / "final"), objective=cfg.objective)
    if stage.dist.main:
        valid = {name: figures[name] for name in ("valid_mlm_acc", "valid_rtd_acc", "valid_rtd_auc", "valid_loss") if name in figures}
        model_card.write_training_card(cfg.out / "final", "pretrain", cfg, cfg.init, valid, figures.get("step"))
    return figures


def render(figures: dict[str, Any]) -> str:
    return numeric_table(figures) + f"\nmodel saved to {figures['out']}"
