"""MLM and RTD as pure tensor functions (selection, masking, corruption, losses, accuracies), and
the registry of pre-training objectives built on them.

Segments: every batch carries a (B, T) `segments` tensor with 0 for special tokens and padding,
1 for NL tokens and 2 for code tokens (the layout `<s> NL </s></s> CODE </s>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

NL, CODE = 1, 2
MaskStyle = Literal["mask", "bert"]


def select_positions(segments: torch.Tensor, rate: float, generator: torch.Generator, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Choose `rate` of the NL positions and `rate` of the code positions of each row, uniformly.

    Paper eqs. (1)-(2): positions are drawn uniformly within each segment; "15% of the tokens
    from x are masked". Each non-empty segment gets max(1, round(rate * length)) positions, as
    BERT's data builder does; special tokens and padding are never chosen. `rows` (B,) limits the
    selection to some rows (e.g. MLM only on bimodal rows). Returns a (B, T) bool tensor.
    """
    scores = torch.rand(segments.shape, generator=generator, device=segments.device)
    selected = torch.zeros_like(segments, dtype=torch.bool)
    for segment in (NL, CODE):
        inside = segments == segment
        length = inside.sum(dim=1)  # (B,)
        k = torch.where(length > 0, torch.clamp(torch.round(length * rate), min=1), torch.zeros_like(length))
        # Rank positions by score within the segment; outside positions rank last.
        ranked = torch.where(inside, scores, torch.full_like(scores, 2.0)).argsort(dim=1).argsort(dim=1)
        selected |= inside & (ranked < k[:, None])
    if rows is not None:
        selected &= rows[:, None]
    return selected


def mask_inputs(
    input_ids: torch.Tensor,
    selected: torch.Tensor,
    mask_id: int,
    style: MaskStyle,
    generator: torch.Generator,
    vocab_size: int,
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4),
) -> torch.Tensor:
    """Replace the selected positions for MLM.

    "mask" (the paper, eqs. 3-4): every selected token becomes <mask>.
    "bert" (RoBERTa's 80/10/10): 80% <mask>, 10% a random regular token, 10% unchanged.
    A regular token is any id of the vocabulary but `special_ids` (the tokenizer's special tokens).
    """
    if style == "mask":
        return torch.where(selected, torch.full_like(input_ids, mask_id), input_ids)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    regular = torch.ones(vocab_size, dtype=torch.bool)
    regular[special[special < vocab_size]] = False
    regular_ids = regular.nonzero().squeeze(1).to(input_ids.device)
    random_tokens = regular_ids[torch.randint(0, len(regular_ids), input_ids.shape, generator=generator, device=input_ids.device)]
    out = torch.where(selected & (draw < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    return torch.where(selected & (draw >= 0.8) & (draw < 0.9), random_tokens, out)


def corrupt(input_ids: torch.Tensor, selected: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Put generator samples at the selected positions (paper eqs. 9-11).

    Returns (corrupted ids, is_replaced). A sample equal to the original counts as original
    (eq. 13, as in ELECTRA): is_replaced compares tokens, not positions.
    """
    corrupted = torch.where(selected, samples, input_ids)
    return corrupted, corrupted != input_ids


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (eq. 6 up to normalisation). logits: (n, V)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0  # keeps the graph (DDP) when a batch has nothing to predict
    return F.cross_entropy(logits.float(), targets)


def rtd_loss(logits: torch.Tensor, is_replaced: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of "replaced" over every valid (non-padding) position.

    The paper's eq. 12 has a typo (1 - log p); this is standard BCE, as in ELECTRA:
    -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] with y = 1 for a replaced token.
    """
    per_token = F.binary_cross_entropy_with_logits(logits.float(), is_replaced.float(), reduction="none")
    return (per_token * valid).sum() / valid.sum().clamp(min=1)


def mlm_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, total) of arg-max predictions at masked positions."""
    return int((logits.argmax(dim=-1) == targets).sum()), int(targets.numel())


def rtd_accuracy(logits: torch.Tensor, is_replaced: torch.Tensor, valid: torch.Tensor) -> tuple[int, int]:
    """(correct, total) of "replaced iff logit > 0" over valid positions."""
    correct = ((logits > 0) == is_replaced) & valid
    return int(correct.sum()), int(valid.sum())


# ------------------------------------------------------------------------------- the registry
# A pre-training objective is one entry here: which rows of a batch it reads, how it changes them,
# which head of the model scores them, and its loss. `--objective a+b` trains the sum of the named
# entries (weighted by `--a-weight`, 1 where the config has no such option), all views stacked
# into one forward pass. A new objective is one module that defines a class and calls `register`.
@dataclass
class View:
    """One objective's share of the stacked forward pass."""

    rows: torch.Tensor  # (B,) bool: the batch rows it trains on
    input_ids: torch.Tensor  # (rows, T) its (masked or corrupted) inputs
    positions: torch.Tensor | None  # (rows, T) bool: where the MLM head predicts (head "mlm"), else None
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # what its loss compares against


class Objective:
    """Base of the registry's entries. `corruptor` (pretrain.stage.Corruptor) masks and corrupts
    batches with the run's mask rate, style and generators; `rng` is the run's masking generator."""

    name: str = ""
    head: Literal["mlm", "rtd"] = "mlm"  # which head of the model scores its rows
    needs_generators: bool = False  # samples replacements from the n-gram generators
    reads_unimodal: bool = False  # its rows may include unimodal code (train data then includes it)

    def rows(self, batch, cfg) -> torch.Tensor:
        raise NotImplementedError

    def view(self, batch, rows: torch.Tensor, corruptor, rng: torch.Generator) -> View:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, view: View, attention: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) from its head's logits: (n_positions, V) for "mlm", (rows, T) for "rtd"."""
        raise NotImplementedError


OBJECTIVES: dict[str, Objective] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: adds an objective to the registry under its `name`."""
    OBJECTIVES[cls.name] = cls()
    return cls


def parse(spec: str) -> list[Objective]:
    """`mlm+rtd` -> the registered entries, in the order named (their views are stacked in it)."""
    names = spec.split("+")
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not spec or len(set(names)) != len(names):
        raise ValueError(f"--objective {spec!r}: name registered objectives joined by '+' ({', '.join(OBJECTIVES)})")
    return [OBJECTIVES[n] for n in names]


def needs_generators(spec: str) -> bool:
    """Whether `--objective spec` samples from the n-gram generators (`--generators` required)."""
    return any(part.needs_generators for part in parse(spec))


def reads_unimodal(spec: str) -> bool:
    """Whether `--objective spec` trains on unimodal code too (it is then read with the pairs)."""
    return any(part.reads_unimodal for part in parse(spec))


@register
class MaskedLanguageModeling(Objective):
    """MLM on NL-code pairs (paper eq. 3-4): 15% of NL and of code positions masked, predicted."""

    name, head = "mlm", "mlm"

    def rows(self, batch, cfg) -> torch.Tensor:
        # The paper reads pairs; the code-only baseline masks every row, pairs having lost their docs.
        bimodal = ~batch.unimodal
        return bimodal if cfg.modality == "bimodal" else torch.ones_like(bimodal)

    def view(self, batch, rows, corruptor, rng) -> View:
        masked, selected = corruptor.masked(batch, rng, rows)
        return View(rows, masked[rows], selected[rows], {"tokens": batch.input_ids[rows][selected[rows]]})

    def loss(self, logits, view, attention):
        targets = view.targets["tokens"].to(logits.device)
        loss = mlm_loss(logits, targets)
        correct, total = mlm_accuracy(logits.detach(), targets)
        return loss, {"mlm_loss": loss.detach(), "mlm_acc": correct / max(total, 1)}


@register
class ReplacedTokenDetection(Objective):
    """RTD (paper eq. 5-7): the same positions replaced by n-gram generator samples; every token
    labelled original/replaced (a sample equal to the original counts as original)."""

    name, head, needs_generators, reads_unimodal = "rtd", "rtd", True, True

    def rows(self, batch, cfg) -> torch.Tensor:
        bimodal = ~batch.unimodal
        return torch.ones_like(bimodal) if cfg.unimodal_rtd else bimodal

    def view(self, batch, rows, corruptor, rng) -> View:
        corrupted, is_replaced, selected = corruptor.corrupted(batch, rng, rows)
        return View(rows, corrupted[rows], None, {"is_replaced": is_replaced[rows], "selected": selected[rows]})

    def loss(self, logits, view, attention):
        labels = view.targets["is_replaced"].to(logits.device)
        valid = attention.bool()
        loss = rtd_loss(logits, labels, valid)
        correct, total = rtd_accuracy(logits.detach(), labels, valid)
        replaced = int(labels.sum()) / max(int(view.targets["selected"].sum()), 1)
        return loss, {"rtd_loss": loss.detach(), "rtd_acc": correct / max(total, 1), "replaced_rate": replaced}
