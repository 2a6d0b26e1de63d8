"""`codebert code2nl finetune|generate|evaluate`: code-to-documentation generation (paper §4.3-4.4).

The commands around CodeBERT's `code2nl` Seq2Seq (model.py), its beam search (decoding.py) and its
pairs (data.py). Conventions of the reference (CodeBERT/code2nl/run.py): lengths 256 (source) and
64 (target); lr 5e-5, batch 64; beam size 10. The reference keeps two models: checkpoint-best-ppl
(lowest dev loss) and checkpoint-best-bleu (highest smoothed BLEU-4 of beam search on up to 1,000
dev items). `--best-metric` picks one for best/: bleu (beam `--valid-beam-size` on up to
`--valid-examples` items) or loss; auto takes bleu on a GPU and loss on a CPU, where a beam-10
pass over 1,000 items at every validation costs more than the training between them. Greedy
BLEU on a few items is not offered: it prefers a constant template (8.6 there, against 1.3 for
outputs that followed the code). Every validation and `code2nl evaluate` report the
source-shuffle diagnostic (`source_shuffle_losses`).
Data: CodeSearchNet jsonl (code_tokens -> docstring_tokens), or the CodeNN format (`--format
codenn`: tab-separated id, question id, title, code, label; the title is the target).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import AutoConfig
from transformers.utils import logging as hf_logging

from codebert.bleu import corpus_bleu, split_punctuation
from codebert.code2nl.data import (EncodedPairs, Pairs, Seq2SeqBatch, bos_eos, encode_summaries, model_sources, name_opening_languages,
                                   read_codenn, read_csn, read_tree, source_input, wrap)
from codebert.code2nl.exemplars import EXEMPLAR_DIR, ExemplarBank
from codebert.code2nl.decoding import generate
from codebert.code2nl.model import (DECODER_FILE, SPEC_FILE, Seq2Seq, Seq2SeqSpec, load_seq2seq, save_seq2seq, seq2seq_loss,
                                    warm_start_decoder)
from codebert.config import given_options, option
from codebert.corpus.languages import SPECS
from codebert.io import atomic_write
from codebert import model_card
from codebert.errors import UserError
from codebert.inputs import Layout
from codebert.inputs import encode_texts
from codebert.tables import format_table, numeric_table
from codebert.training.stage import FinetuneConfig, TrainingStage, load_wrapped_encoder
from codebert.backbone import load_tokenizer, resolve


# ------------------------------------------------------------------------------------ configs
@dataclass(kw_only=True)
class Code2nlFinetuneConfig(FinetuneConfig):
    """The paper's settings (§4.3) are the defaults: lr 5e-5, batch 64, 6 decoder layers (feed-forward
    2048, as the reference's), 256 code and 64 doc tokens, beam 10; best/ as `--best-metric` says."""

    model: str = option(help="pre-trained checkpoint whose encoder reads the code")
    data: Path = option(help="corpus folder (CodeSearchNet layout), or a CodeNN training file with --format codenn")
    out: Path = option(help="run folder: checkpoints, best/ (highest validation BLEU), final/")
    format: Literal["csn", "codenn", "tree"] = option("csn", "data format (tree: any source tree, `code2nl generate` only)")
    valid_data: Path | None = option(None, "CodeNN validation file (--format codenn)")
    decoder_layers: int = option(6, "Transformer decoder layers (the paper: 6)")
    decoder_ffn: int = option(2048, "decoder feed-forward width (the reference: nn.TransformerDecoderLayer's default, 2048; "
                                    "0: the encoder's intermediate size)")
    max_source_length: int = option(256, "code tokens (the paper: 256)")
    max_target_length: int = option(64, "doc tokens (the paper: 64)")
    beam_size: int = option(10, "beam of generation (the paper: 10)")
    valid_beam_size: int = option(10, "beam of the validation BLEU (--best-metric bleu; the reference: 10)")
    epochs: float = option(10.0, "passes over the training set when --max-steps is 0")
    recipe: Literal["auto", "paper", "cpu"] = option(
        "auto", "paper: the reference's settings (the defaults above); cpu: beyond the paper, what a 2-core CPU trains to "
        "documents that follow the code in under 2 hours (CPU_RECIPE: the encoder frozen, a copying 2-layer decoder at "
        "lr 1e-3, identifiers split and joined back, an 8,192-token output vocabulary, 128 source tokens, 4,000 steps of 32, a Go document opening with its function's name, beam 3); it changes only the options you do not give; auto: paper on a GPU, cpu on a CPU")
    decoder_init: Literal["random", "encoder"] = option(
        "random", "random: the decoder starts at random (the paper's); encoder: each decoder layer starts as the encoder's "
        "layer of the same depth, cross-attention at random (BERT2BERT, Rothe et al. 2020; its feed-forward width and "
        "activation then the encoder's)")
    frozen_encoder: bool = option(False, "train the decoder alone: the pre-trained encoder is not updated (recipe cpu: on)")
    encoder_train_layers: int = option(0, "with --frozen-encoder: the encoder's top N layers still train, at --learning-rate "
                                          "times --encoder-lr-scale (a step then also costs their backward pass)")
    encoder_lr_scale: float = option(0.05, "the learning rate of the encoder layers that train beside a frozen encoder, as a "
                                           "fraction of --learning-rate (0.05 of the CPU recipe's 1e-3: the paper's 5e-5)")
    copy: bool = option(False, "a pointer-generator copy distribution over the source's tokens beside the vocabulary's "
                               "(See et al., 2017; recipe cpu: on)")
    split_identifiers: bool = option(False, "camelCase identifiers of the source split into words (recipe cpu: on)")
    join_identifiers: bool = option(False, "with --split-identifiers: the targets' camelCase identifiers written as their split "
                                           "words joined by the tokenizer's mask token, so the copy writes them whole from the "
                                           "split source; generation joins them back (recipe cpu: on)")
    output_vocabulary: int = option(0, "with --copy: the decoder's vocabulary distribution covers the N commonest tokens of the "
                                       "training targets, other tokens are only copied (0: the whole vocabulary, the paper's; "
                                       "recipe cpu: 8192)")
    no_repeat_ngram: int = option(0, "the model's beam never repeats an n-gram of this many tokens (0: the reference's beam; "
                                     "recipe cpu: 3)")
    length_penalty: float = option(0.0, "the model's beam ranks an ended document by its log-probability over length ** this "
                                        "(HF's length_penalty; 0: the reference's sum, which prefers short documents; recipe cpu: 0.5)")
    min_length: int = option(0, "the model's beam ends no document before this many tokens (HF's min_new_tokens; 0: the "
                                "reference's beam, any length)")
    open_with_name: bool = option(False, "beyond the paper: in a language whose training summaries mostly open with the "
                                         "function's name (Go's convention), the beam writes the name first and the decoder "
                                         "the rest; the languages are saved with the model (recipe cpu: on)")
    exemplar_tokens: int = option(0, "beyond the paper: the encoder reads the summary of the nearest training function (BM25 "
                                     "over the code, another repository's) before the code, cut to this many tokens; the "
                                     "retrieval index is saved with the model (0: the code alone, the paper's)")
    label_smoothing: float = option(0.0, "beyond the paper: the share of the training loss spread evenly over the decoder's "
                                         "vocabulary distribution (Vaswani et al. 2017: 0.1; the reference: 0); the valid loss "
                                         "is never smoothed")
    best_metric: Literal["auto", "bleu", "loss"] = option(
        "auto", "what picks best/: bleu (beam BLEU on up to --valid-examples dev items, the reference's checkpoint-best-bleu), "
        "loss (dev loss, its checkpoint-best-ppl); auto: bleu on a GPU, loss on a CPU")

    def validate(self) -> list[str]:
        problems = self.validate_finetune()
        if self.format == "csn" and not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        if self.format == "codenn":
            if not self.data.is_file():
                problems.append(f"--data {self.data}: no such file")
            if self.valid_data is None or not self.valid_data.is_file():
                problems.append("--valid-data: a CodeNN validation file is required with --format codenn")
        if not 8 <= self.max_source_length <= 512 or not 4 <= self.max_target_length <= 512:
            problems.append("--max-source-length must be in [8, 512], --max-target-length in [4, 512]")
        if self.decoder_layers < 1:
            problems.append("--decoder-layers: must be >= 1")
        if self.encoder_train_layers < 0 or self.encoder_lr_scale <= 0:
            problems.append("--encoder-train-layers: must be >= 0; --encoder-lr-scale: > 0")
        if self.decoder_ffn < 0:
            problems.append("--decoder-ffn: must be >= 0 (0: the encoder's intermediate size)")
        if self.beam_size < 1 or self.valid_beam_size < 1:
            problems.append("--beam-size and --valid-beam-size: must be >= 1")
        if not 0 <= self.min_length < self.max_target_length - 1:
            problems.append("--min-length: must be >= 0 and below --max-target-length - 1")
        if not 0 <= self.exemplar_tokens <= self.max_source_length // 2:
            problems.append("--exemplar-tokens: must be >= 0 and at most half of --max-source-length")
        if self.output_vocabulary < 0 or (self.output_vocabulary and not self.copy):
            problems.append("--output-vocabulary: must be >= 0, and needs --copy (other tokens are written only by copying)")
        if not 0 <= self.label_smoothing < 1:
            problems.append("--label-smoothing: must be in [0, 1)")
        if self.join_identifiers and not self.split_identifiers:
            problems.append("--join-identifiers: needs --split-identifiers (it copies an identifier's words from the split source)")
        return problems

    def spec(self, copy_exclude: list[int] | None = None, joiner: int = -1) -> Seq2SeqSpec:
        """The model's spec (its output vocabulary is chosen from the training targets later: `output_vocabulary`)."""
        return Seq2SeqSpec(self.decoder_layers, self.max_source_length, self.max_target_length, self.beam_size, self.decoder_ffn,
                           copy=self.copy, copy_exclude=list(copy_exclude or []), split_identifiers=self.split_identifiers,
                           no_repeat_ngram=self.no_repeat_ngram, length_penalty=self.length_penalty,
                           min_length=self.min_length, exemplar_tokens=self.exemplar_tokens,
                           joiner=joiner if self.join_identifiers else -1)

    def resolved_recipe(self, device: torch.device) -> str:
        """`auto`: the paper's recipe where a GPU runs it, the CPU recipe on a CPU."""
        if self.recipe != "auto":
            return self.recipe
        return "paper" if device.type == "cuda" else "cpu"

    def resolved_best_metric(self, device: torch.device) -> str:
        """`auto`: the reference's beam BLEU where a GPU makes it affordable, the dev loss on a CPU."""
        if self.best_metric != "auto":
            return self.best_metric
        return "bleu" if device.type == "cuda" else "loss"


# The CPU recipe (beyond the paper): the options `--recipe cpu` changes, where they are not given.
# Chosen by measurement on csn6 (docs/results.md, "Code-to-doc on our CPUs"): the reference's
# decoder, trained with its encoder, writes one template for every function after the ~1% of its
# budget a CPU affords; with the encoder frozen a step costs its forward pass alone, the decoder
# learns at a rate the pre-trained encoder would not survive, and the copy distribution writes the
# code's own words (identifiers split so that they are words) from the first hundred steps.
# Identifiers as written with the encoder's top layer training reached a lower valid loss (4.97
# against 5.11 at step 1,000) but a lower valid BLEU (10.35 against 11.94, 50 per language): the
# recipe follows BLEU, the measure. 2,000 steps (77 minutes on 2 quiet cores with the
# validations) against 1,000: valid loss 4.90 against 5.11, valid BLEU 12.88 against 11.94.
# Summaries' identifiers joined from their split words (a Go summary opens with its function's name,
# which WordPiece otherwise cuts into pieces no source has), a vocabulary distribution over the
# training summaries' 8,192 commonest tokens and batches sorted by summary length (a step ~1.6 s
# instead of ~2.3): valid BLEU 13.03 against 11.94 at 1,000 steps. With them, 4,000 steps (115
# minutes on 2 quiet cores) against 1,000: valid loss 4.48 against 4.87, valid BLEU 13.28 against 13.03.
# A Go document opening with its function's name as written (`open_with_name`, a decoding rule: the
# same model): Go valid BLEU 11.30 against 8.67 (200 functions). A beam of 3 instead of the paper's
# 10 (a wide beam finds the short generic document): valid BLEU 13.62 against 13.19 (200 a language).
CPU_RECIPE: dict[str, Any] = {
    "frozen_encoder": True,
    "copy": True,
    "split_identifiers": True,
    "no_repeat_ngram": 3,  # a copying decoder early in training repeats a copied sub-word (`matchmatchmatch`)
    "length_penalty": 0.5,  # valid BLEU 11.94 against the sum's 11.70; 1.0 ties (11.96) and writes babble on unseen code
    "beam_size": 3,  # valid BLEU (200 a language) 13.62 against beam 10's 13.19 (5: 13.54, greedy: 13.61)
    "valid_beam_size": 3,
    "decoder_layers": 2,
    "max_source_length": 128,  # the encoder's forward pass is half of a step: 256 tokens cost twice 128's
    "join_identifiers": True,
    "output_vocabulary": 8192,
    "open_with_name": True,
    "learning_rate": 1e-3,
    "warmup_steps": 100,
    "batch_size": 32,
    "max_steps": 4000,  # ~1.7 s a step on our 2 cores: 115 minutes with the validations (the bound: 2 hours)
    "eval_every": 250,
    "save_every": 50,
    "log_every": 20,
    "valid_examples": 300,
}


def apply_recipe(cfg: Code2nlFinetuneConfig, recipe: str) -> Code2nlFinetuneConfig:
    """`cfg` with the recipe's values for every option the preset and the command line left alone."""
    if recipe != "cpu":
        return cfg
    given = given_options(cfg)
    changes = {name: value for name, value in CPU_RECIPE.items() if name not in given}
    # A recipe option that needs one the user turned off goes with it (`--no-copy`: no output vocabulary).
    if "copy" in given and not cfg.copy and "output_vocabulary" not in given:
        changes["output_vocabulary"] = 0
    if "split_identifiers" in given and not cfg.split_identifiers and "join_identifiers" not in given:
        changes["join_identifiers"] = False
    return dataclasses.replace(cfg, recipe="cpu", **changes)


def output_vocabulary(targets: list[np.ndarray], size: int, always: list[int]) -> list[int]:
    """The `size` commonest token ids of the training targets (ties: the smaller id), and `always`
    (the end token, the joiner): the tokens the CPU recipe's vocabulary distribution covers."""
    counts = np.bincount(np.concatenate(targets), minlength=1) if targets else np.zeros(1, dtype=np.int64)
    order = np.lexsort((np.arange(len(counts)), -counts))
    common = [int(i) for i in order[:size] if counts[i] > 0]
    return sorted(set(common) | {i for i in always if i >= 0})


def _read(cfg, split: str) -> Pairs:
    if cfg.format == "codenn":
        return read_codenn(cfg.data if split == "train" else cfg.valid_data, max_records=cfg.max_records)
    return read_csn(cfg.data, split, cfg.language, cfg.max_records)


def bleu_of(predictions: list[str], pairs: Pairs) -> float:
    """Smoothed BLEU-4 exactly as the evaluator reads files (lower-cased, punctuation split)."""
    references = {i: [split_punctuation(t.strip().lower()) for t in targets] for i, targets in zip(pairs.ids, pairs.targets)}
    preds = {i: split_punctuation(p.strip().lower()) for i, p in zip(pairs.ids, predictions)}
    return corpus_bleu(references, preds)[0]


def batches_of(layout: Layout, spec: Seq2SeqSpec):
    """The collate function of code2nl pairs: sources (with their exemplars, `source_input`) and targets
    wrapped in the tokenizer's layout, padded."""

    def collate(c: EncodedPairs, indices, max_length: int) -> Seq2SeqBatch:
        src = layout.pad([source_input(c.sources[i], spec.max_source_length, layout, None if c.exemplars is None else c.exemplars[i],
                                       spec.exemplar_tokens) for i in indices])
        tgt = layout.pad([wrap(c.targets[i], spec.max_target_length, layout) for i in indices])
        return Seq2SeqBatch(*src, *tgt)

    return collate


def exemplars_of(bank: ExemplarBank | None, pairs: Pairs) -> list[str] | None:
    """Each pair's exemplar from `bank` (None: a model without exemplars). Repositories are passed so
    that a training function's exemplar is another repository's (`ExemplarBank.nearest`)."""
    return None if bank is None else bank.nearest(pairs.sources, pairs.languages, pairs.repos)


def encoded_pairs(tokenizer, spec: Seq2SeqSpec, pairs: Pairs, exemplars: list[str] | None) -> EncodedPairs:
    """Pairs as token ids: the sources as the model reads them (identifiers split or not), the first
    reference, the exemplars where the model has them."""
    targets = [t[0] for t in pairs.targets]
    return EncodedPairs(encode_texts(tokenizer, model_sources(pairs.sources, spec.split_identifiers)),
                        encode_summaries(tokenizer, targets, spec.joiner),
                        None if exemplars is None else encode_texts(tokenizer, exemplars))


@torch.no_grad()
def source_shuffle_losses(model: Seq2Seq, pairs: EncodedPairs, layout: Layout, batch_size: int, device) -> dict[str, float]:
    """Loss per target token with each function's own source, and with every target given another
    function's source (the sources rolled by one: function i's doc after function i+1's code).

    A decoder that reads its source loses clearly when the source is not its own; one that writes
    the same template for every function loses nothing (shuffled - intact ~ 0). Needs 2+ pairs.
    """
    collate = batches_of(layout, model.spec)
    n = len(pairs)
    # An exemplar is part of its function's source: it moves with the code.
    rolled = EncodedPairs([pairs.sources[(i + 1) % n] for i in range(n)], pairs.targets,
                          None if pairs.exemplars is None else [pairs.exemplars[(i + 1) % n] for i in range(n)])
    sums, tokens = {"loss": 0.0, "shuffled_loss": 0.0}, 0
    for start in range(0, n, batch_size):
        indices = list(range(start, min(start + batch_size, n)))
        for name, source in (("loss", pairs), ("shuffled_loss", rolled)):
            batch = collate(source, indices, model.spec.max_source_length)
            target_ids, target_mask = batch.target_ids.to(device), batch.target_mask.to(device)
            memory = model.encode(batch.source_ids.to(device), batch.source_mask.to(device))
            logits = model.decode(memory, batch.source_mask.to(device), target_ids, batch.source_ids.to(device))
            sums[name] += float(seq2seq_loss(logits, target_ids, target_mask, reduction="sum", log_probs=model.spec.copy))
        tokens += int(batch.target_mask[:, 1:].sum())
    figures = {name: value / max(tokens, 1) for name, value in sums.items()}
    figures["shuffle_gain"] = figures["shuffled_loss"] - figures["loss"]
    return figures


def _encoder_shaped(spec: Seq2SeqSpec, cfg: Code2nlFinetuneConfig) -> Seq2SeqSpec:
    """The decoder's feed-forward width and activation made the encoder's (what `--decoder-init
    encoder` copies into); a --decoder-ffn given on the command line is kept (and refused later if
    it differs)."""
    width = spec.decoder_ffn if "decoder_ffn" in given_options(cfg) else 0
    return dataclasses.replace(spec, decoder_ffn=width, decoder_activation=AutoConfig.from_pretrained(resolve(cfg.model)).hidden_act)


def finetune_main(cfg: Code2nlFinetuneConfig) -> dict[str, Any]:
    # The recipe is settled before the stage starts (its seeds, its run_config.json): on this device.
    recipe = cfg.resolved_recipe(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = apply_recipe(cfg, recipe)
    if recipe == "paper":
        cfg = dataclasses.replace(cfg, recipe="paper")
    stage = TrainingStage(cfg)
    device = stage.device
    tokenizer = load_tokenizer(cfg.model)
    train, valid = _read(cfg, "train"), _read(cfg, "valid")
    if cfg.valid_examples and len(valid.ids) > cfg.valid_examples:
        keep = np.random.default_rng(cfg.seed).choice(len(valid.ids), cfg.valid_examples, replace=False)
        valid = valid.subset(keep)
    joiner = -1
    if cfg.join_identifiers:
        if tokenizer.mask_token_id is None:
            raise UserError(f"--join-identifiers: {cfg.model}'s tokenizer has no mask token to join identifier parts with")
        joiner = tokenizer.mask_token_id  # a token no summary has, in every MLM backbone's vocabulary
    spec = cfg.spec(copy_exclude=tokenizer.all_special_ids, joiner=joiner)
    if cfg.decoder_init == "encoder":
        spec = _encoder_shaped(spec, cfg)
    bank = None
    if spec.exemplar_tokens:
        bank = ExemplarBank.build(train.sources, [t[0] for t in train.targets], train.languages, train.repos)
    valid_exemplars = exemplars_of(bank, valid)
    corpus = encoded_pairs(tokenizer, spec, train, exemplars_of(bank, train))  # the output vocabulary changes no encoding
    valid_encoded = encoded_pairs(tokenizer, spec, valid, valid_exemplars)
    layout = Layout.of(tokenizer)
    if cfg.output_vocabulary:
        kept = output_vocabulary(corpus.targets, cfg.output_vocabulary, [bos_eos(layout)[1], joiner])
        spec = dataclasses.replace(spec, output_vocabulary=kept)
    if cfg.open_with_name:
        spec = dataclasses.replace(spec, open_with_name=name_opening_languages(train))
    model = load_seq2seq(cfg.model, spec, from_scratch=cfg.from_scratch, dropout=cfg.dropout)
    model.spec = spec
    if cfg.decoder_init == "encoder":
        if (Path(resolve(cfg.model)) / SPEC_FILE).is_file():
            raise UserError(f"--decoder-init encoder: {cfg.model} is a code2nl model already (its decoder is trained)")
        try:
            warm_start_decoder(model)
        except ValueError as exc:
            raise UserError(f"--decoder-init encoder: {exc}") from None
    if cfg.frozen_encoder:
        model.encoder.requires_grad_(False)  # out of the optimizer (and of DDP's gradient sync)
        model.frozen_encoder = _unfreeze_top_layers(model, cfg.encoder_train_layers, cfg.encoder_lr_scale) == 0
    model.label_smoothing = cfg.label_smoothing
    collate = batches_of(layout, spec)
    best_metric = cfg.resolved_best_metric(device)

    def loss_fn(m, batch: Seq2SeqBatch) -> dict[str, Any]:
        moved = Seq2SeqBatch(*(t.to(device) for t in (batch.source_ids, batch.source_mask, batch.target_ids, batch.target_mask)))
        return {"loss": m(moved)}

    def evaluate(m) -> dict[str, float]:
        figures = source_shuffle_losses(m, valid_encoded, layout, cfg.batch_size, device)
        if best_metric == "bleu":
            predictions = generate(m, tokenizer, valid.sources, cfg.valid_beam_size, exemplars=valid_exemplars, names=valid.names,
                                   languages=valid.languages)
            figures.update(bleu=bleu_of(predictions, valid), distinct=len(set(predictions)))
        return figures

    def save_model(m, folder: Path) -> None:
        save_seq2seq(m, tokenizer, folder)
        if bank is not None:
            bank.save(folder / EXEMPLAR_DIR)

    def load_model(m, folder: Path) -> None:
        # save_seq2seq's layout: the encoder's own folder plus the decoder file under model keys.
        load_wrapped_encoder(m, folder, extra=folder / DECODER_FILE)

    figures = stage.fit(model, loss_fn, corpus, collate, spec.max_source_length, save_model, load_model=load_model,
                        evaluate=evaluate, best_metric=best_metric)
    figures.update(out=str(cfg.out / "best"), best_metric=best_metric, recipe=cfg.recipe)
    if stage.dist.main:
        valid = {f"best {best_metric} (valid)": figures[f"best_valid_{best_metric}"]} if f"best_valid_{best_metric}" in figures else {}
        model_card.write_training_card(cfg.out / "best", "code2nl", cfg, None if cfg.from_scratch else cfg.model, valid, figures.get("step"))
    return figures


def finetune_render(figures: dict[str, Any]) -> str:
    return numeric_table(figures) + f"\nbest model saved to {figures['out']}"


@dataclass
class Code2nlEvaluateConfig:
    model: Path = option(help="fine-tuned code2nl folder (best/ of `code2nl finetune`)")
    data: Path = option(help="corpus folder (CodeSearchNet layout), a CodeNN file with --format codenn, or source "
                             "files and folders with --format tree (generate: a summary for every function)")
    out: Path = option(help="folder for predictions.txt, references.txt and results.json")
    format: Literal["csn", "codenn", "tree"] = option("csn", "data format (tree: any source tree, `code2nl generate` only)")
    references: Path | None = option(None, "CodeNN references (id<TAB>title, several per id) for --format codenn")
    split: str = option("test", "split to generate for (csn)")
    language: list[str] = option([], "languages (csn; empty: all, each scored on its own)")
    beam_size: int = option(0, "beam (0: the model's, 10 as the paper)")
    no_repeat_ngram: int = option(-1, "never repeat an n-gram of this many tokens (-1: the model's rule; 0: off, the reference's beam)")
    length_penalty: float | None = option(None, "rank ended documents by log-probability over length ** this (default: the "
                                                "model's; 0: the reference's sum)")
    min_length: int | None = option(None, "end no document before this many tokens (default: the model's; 0: any length, the reference's)")
    open_with_name: str = option("model", "languages whose documents begin with the function's name, written by the beam "
                                          "(a comma list such as `go`; `none`; default `model`: the model's, its training "
                                          "summaries' habit)")
    max_records: int = option(0, "generate for at most this many records per language (0: all)")
    batch_size: int = option(16, "sources per batch")
    label: str = option("", "row name in tables (default: the model folder)")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    progress: bool = option(True, "show a progress bar")

    def validate(self) -> list[str]:
        problems = [] if self.data.exists() else [f"--data {self.data}: not found"]
        if self.beam_size < 0:
            problems.append("--beam-size: must be >= 0 (0: the model's)")
        if self.no_repeat_ngram < -1:
            problems.append("--no-repeat-ngram: must be >= -1 (-1: the model's)")
        if self.min_length is not None and self.min_length < 0:
            problems.append("--min-length: must be >= 0")
        if self.batch_size < 1:
            problems.append("--batch-size: must be >= 1")
        if self.max_records < 0 or self.threads < 0:
            problems.append("--max-records and --threads: must be >= 0")
        listed = [] if self.open_with_name.strip() in ("model", "none") else [lang.strip() for lang in self.open_with_name.split(",")]
        unknown = [lang for lang in listed if lang and lang not in SPECS]
        if "" in listed or unknown:
            problems.append(f"--open-with-name: `model`, `none`, or a comma list of languages of {', '.join(sorted(SPECS))}"
                            + (f" (not one: {', '.join(unknown)})" if unknown else ""))
        return problems

    def name_openers(self, spec: Seq2SeqSpec) -> list[str]:
        """The languages whose documents begin with the function's name: --open-with-name resolved."""
        given = self.open_with_name.strip()
        if given == "model":
            return list(spec.open_with_name)
        if given == "none":
            return []
        return sorted({lang.strip() for lang in given.split(",") if lang.strip()})


def _unfreeze_top_layers(model: Seq2Seq, count: int, lr_scale: float) -> int:
    """The encoder's top `count` layers train again (at `lr_scale` of the rate); how many there are.

    The layers below them and the embeddings stay frozen and record no graph (nothing they compute
    requires a gradient), so a step costs the top layers' backward pass beyond the frozen recipe's.
    """
    if count == 0:
        return 0
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)  # BERT- and RoBERTa-family encoders alike
    if layers is None:
        raise UserError(f"--encoder-train-layers: {type(model.encoder).__name__} has no encoder.layer list to train the top of")
    if count > len(layers):
        raise UserError(f"--encoder-train-layers {count}: the encoder has {len(layers)} layers")
    first = len(layers) - count
    for layer in layers[first:]:
        layer.requires_grad_(True)
    model.lr_scales = {f"encoder.encoder.layer.{i}.": lr_scale for i in range(first, len(layers))}
    return count


def generate_main(cfg: Code2nlEvaluateConfig) -> dict[str, Any]:
    """Predictions (and references) written to --out; no score."""
    return evaluate_main(cfg, score=False)


def evaluate_main(cfg: Code2nlEvaluateConfig, score: bool = True) -> dict[str, Any]:
    hf_logging.disable_progress_bar()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not (cfg.model / SPEC_FILE).is_file():
        raise UserError(f"{cfg.model}: no {SPEC_FILE}; fine-tune it first with `codebert code2nl finetune`")
    tokenizer = load_tokenizer(cfg.model)
    model = load_seq2seq(cfg.model).eval()
    bank = None
    if model.spec.exemplar_tokens:
        if not (cfg.model / EXEMPLAR_DIR).is_dir():
            raise UserError(f"{cfg.model}: a model with exemplars but no {EXEMPLAR_DIR}/ folder (copy the whole model folder)")
        bank = ExemplarBank.load(cfg.model / EXEMPLAR_DIR)
    beam = cfg.beam_size or model.spec.beam_size
    places: list[dict[str, Any]] = []
    if cfg.format == "tree":
        if score:
            raise UserError("--format tree: the functions of a source tree have no reference summaries to score; use `code2nl generate`")
        pairs, places = read_tree([cfg.data], cfg.language, cfg.max_records)
        groups = {"tree": pairs}
    elif cfg.format == "codenn":
        groups = {"csharp": read_codenn(cfg.data, cfg.references, cfg.max_records)}
    else:
        languages = cfg.language or sorted({i.split("-")[0] for i in read_csn(cfg.data, cfg.split, [], 1).ids})
        groups = {lang: read_csn(cfg.data, cfg.split, [lang], cfg.max_records) for lang in languages}
    cfg.out.mkdir(parents=True, exist_ok=True)
    # The beam's rules: the model's unless given (resolved once, for generation and for results.json alike).
    repeats = model.spec.no_repeat_ngram if cfg.no_repeat_ngram < 0 else cfg.no_repeat_ngram
    penalty = model.spec.length_penalty if cfg.length_penalty is None else cfg.length_penalty
    least = model.spec.min_length if cfg.min_length is None else cfg.min_length
    opening = cfg.name_openers(model.spec)
    figures: dict[str, Any] = {"model": str(cfg.model), "label": cfg.label or cfg.model.parent.name, "beam": beam,
                               "no_repeat_ngram": repeats, "length_penalty": penalty, "min_length": least, "open_with_name": opening}
    pred_lines, ref_lines, written = [], [], []
    layout = Layout.of(tokenizer)
    for lang, pairs in groups.items():
        exemplars = exemplars_of(bank, pairs)
        predictions = generate(model, tokenizer, pairs.sources, beam, cfg.batch_size, cfg.progress, repeats, penalty, least, exemplars,
                               pairs.names, pairs.languages, opening)
        written += predictions
        if places:  # a source tree: each summary beside the function's place and its own doc comment
            figures["summaries"] = [{**place, "summary": p, "docstring": t[0]} for place, p, t in zip(places, predictions, pairs.targets)]
        if score:
            figures[lang] = bleu_of(predictions, pairs)
            if len(pairs.ids) > 1:
                encoded = encoded_pairs(tokenizer, model.spec, pairs, exemplars)
                reading = source_shuffle_losses(model, encoded, layout, cfg.batch_size, next(model.parameters()).device)
                figures.update({f"{lang}_{name}": value for name, value in reading.items()})
        figures[f"{lang}_examples"] = len(pairs.ids)
        pred_lines += [f"{i}\t{p}\n" for i, p in zip(pairs.ids, predictions)]
        ref_lines += [f"{i}\t{t}\n" for i, targets in zip(pairs.ids, pairs.targets) for t in targets]
    figures["languages"] = list(groups)
    if score:
        figures["macro_bleu"] = float(np.mean([figures[lang] for lang in groups]))
    # A decoder that writes the same document for every function scores a BLEU that measures the
    # constant, not the model: the count says so beside the score.
    figures["distinct_predictions"] = len(set(written))
    figures["predictions"] = len(written)
    for name, lines in (("predictions.txt", pred_lines), ("references.txt", ref_lines)):
        with atomic_write(cfg.out / name) as f:
            f.writelines(lines)
    with atomic_write(cfg.out / "results.json") as f:
        f.write(json.dumps(figures, indent=2) + "\n")
    if score:
        where = f"{cfg.split}, beam {beam}" + (f", {cfg.max_records} per language" if cfg.max_records else "")
        model_card.add_figures(cfg.model, [
            model_card.Figure(cfg.split, f"smoothed BLEU-4, macro ({where})", figures["macro_bleu"], model_card.command_line()),
            model_card.Figure(cfg.split, f"distinct documents per function ({where})", figures["distinct_predictions"] / max(figures["predictions"], 1),
                              model_card.command_line())])
    return figures


def evaluate_render(figures: dict[str, Any]) -> str:
    if "summaries" in figures:
        rows = [[s["location"], s["name"], s["summary"], s["docstring"][:60] or "-"] for s in figures["summaries"]]
        return (format_table(["function", "name", "summary (generated)", "its doc comment"], rows)
                + f"\n{figures['distinct_predictions']:,} distinct summaries for {figures['predictions']:,} functions; "
                  "predictions.txt in the output folder")
    if "macro_bleu" not in figures:
        total = sum(figures[f"{lang}_examples"] for lang in figures["languages"])
        return f"{total} docs generated (beam {figures['beam']}): predictions.txt and references.txt in the output folder"
    rows = [[lang, figures[lang], figures[f"{lang}_examples"]] for lang in figures["languages"]]
    rows.append(["macro-average", figures["macro_bleu"], sum(figures[f"{l}_examples"] for l in figures["languages"])])
    text = format_table(["language", "smoothed BLEU-4", "examples"], rows)
    if "distinct_predictions" in figures:
        text += f"\n{figures['distinct_predictions']:,} distinct documents for {figures['predictions']:,} functions"
        if is_constant(figures["distinct_predictions"], figures["predictions"]):
            text += " (nearly constant output: the BLEU measures that constant, not the model's reading of the code)"
    shuffled = [lang for lang in figures["languages"] if f"{lang}_shuffle_gain" in figures]
    if shuffled:
        rows = [[lang, figures[f"{lang}_loss"], figures[f"{lang}_shuffled_loss"], figures[f"{lang}_shuffle_gain"]] for lang in shuffled]
        text += "\n\nDoes the decoder read its source? Loss per doc token with each function's own code, and with another's:\n"
        text += format_table(["language", "own source", "shuffled sources", "difference"], rows)
        text += "\n(a difference near 0: the documents do not depend on the code)"
    return text


def is_constant(distinct: int, total: int) -> bool:
    """A nearly constant generator: at most 5% distinct documents (and more than one function)."""
    return total > 1 and distinct <= max(1, 0.05 * total)
