"""MLM and RTD as pure tensor functions (selection, masking, corruption, losses, metrics), and the
registry of pre-training objectives built on them.

Segments: every batch carries a (B, T) `segments` tensor with 0 for special tokens and padding,
1 for NL tokens and 2 for code tokens (the layout `<s> NL </s> CODE </s>`).

Reductions (`--loss-reduction`), the one place the paper and ELECTRA differ:
  sum   the paper's eq. 14: L_MLM (eq. 6) is a sum over the masked positions, L_RTD (eq. 12) a sum
        over every NL and code token; both sums are divided by one count shared by the batch (its
        selected positions), so the learning rate keeps the meaning it has for MLM alone. RTD then
        weighs about 1/mask_rate (~6.7) times what a mean would give it, more with unimodal rows.
  mean  ELECTRA's: each loss averaged over its own positions (RTD over every non-padding position,
        special tokens included), added with weights (`--rtd-weight`; ELECTRA: 50). Our default
        before the fidelity review, with weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

NL, CODE = 1, 2
MaskStyle = Literal["mask", "bert"]
Reduction = Literal["sum", "mean"]


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


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Cross-entropy at the masked positions (paper eq. 6). logits: (n, V); targets: (n,).

    "sum": eq. 6 as written (the caller divides by the batch's shared count); "mean": per position.
    """
    if targets.numel() == 0:
        return logits.sum() * 0.0  # keeps the graph (DDP) when a batch has nothing to predict
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def rtd_loss(logits: torch.Tensor, is_replaced: torch.Tensor, positions: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Binary cross-entropy of "replaced" over `positions` (B, T) bool.

    The paper's eq. 12 has a typo (1 - log p); this is standard BCE, as in ELECTRA:
    -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] with y = 1 for a replaced token.
    "sum": eq. 12 as written, over the positions given (the NL and code tokens); "mean": per position.
    """
    per_token = F.binary_cross_entropy_with_logits(logits.float(), is_replaced.float(), reduction="none")
    total = (per_token * positions).sum()
    return total if reduction == "sum" else total / positions.sum().clamp(min=1)


def mlm_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, total) of arg-max predictions at masked positions."""
    return int((logits.argmax(dim=-1) == targets).sum()), int(targets.numel())


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative.

    Mann-Whitney U with tied scores given their average rank (a tie counts one half), as
    scikit-learn's `roc_auc_score` computes it. NaN when either class is absent. Unlike accuracy at
    the 0.5 threshold, it shows a discriminator that ranks replaced tokens higher before any of them
    crosses the threshold (about 10% of RTD's tokens are replaced).
    """
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score, ties averaged
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def base_rate_entropy(replaced_share: float) -> float:
    """BCE in nats of always answering the base rate p: -(p log p + (1 - p) log(1 - p)).

    The RTD loss of a discriminator that has learned how many tokens are replaced and nothing else.
    """
    p = min(max(replaced_share, 1e-12), 1 - 1e-12)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)))


@dataclass
class RtdFigures:
    """RTD on a set of NL and code tokens, with the floors to read it against."""

    loss: float  # mean BCE per token (nats)
    base_loss: float  # the same for always answering the base rate (base_rate_entropy): nothing learnt
    acc: float  # accuracy of "replaced iff logit > 0"
    floor: float  # accuracy of always answering "original" (the share of original tokens)
    auc: float  # ROC AUC of the logits (0.5: no ranking; NaN: one class absent)

    @staticmethod
    def of(logits: torch.Tensor, is_replaced: torch.Tensor, positions: torch.Tensor) -> RtdFigures:
        """Figures over `positions` (bool, the shape of `logits`); logits and labels may be any shape."""
        z = logits.detach().float()[positions].cpu()
        y = is_replaced[positions].cpu()
        n = max(len(y), 1)
        share = float(y.float().mean()) if len(y) else 0.0
        bce = float(F.binary_cross_entropy_with_logits(z, y.float(), reduction="sum")) / n
        return RtdFigures(loss=bce, base_loss=base_rate_entropy(share), acc=float(((z > 0) == y).sum()) / n,
                          floor=1.0 - share, auc=roc_auc(z.numpy(), y.numpy()))

    def metrics(self) -> dict[str, float]:
        """rtd_loss, rtd_base_loss, rtd_acc, rtd_floor, rtd_auc."""
        return {f"rtd_{name}": value for name, value in self.__dict__.items()}


# ------------------------------------------------------------------------------- the registry
# A pre-training objective is one entry here: which rows of a batch it reads, how it changes the
# batch's selected positions, which head of the model scores them, and its loss. `--objective a+b`
# trains the sum of the named entries (weighted by `--a-weight`, 1 where the config has no such
# option), all views stacked into one forward pass. One selection of positions per batch serves
# every view (the paper replaces the positions MLM masked, m^w and m^c, eqs. 7-10). A new
# objective is one module that defines a class and calls `register`.
@dataclass
class View:
    """One objective's share of the stacked forward pass."""

    rows: torch.Tensor  # (B,) bool: the batch rows it trains on
    input_ids: torch.Tensor  # (rows, T) its (masked or corrupted) inputs
    positions: torch.Tensor | None  # (rows, T) bool: where the MLM head predicts (head "mlm"), else None
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # what its loss compares against


class Objective:
    """Base of the registry's entries. `selected` (B, T) is the batch's one selection of positions
    (`select_positions` over the rows any objective reads); `corruptor` (pretrain.stage.Corruptor)
    masks and corrupts them with the run's mask style and generators; `rng` is the run's masking
    generator."""

    name: str = ""
    head: Literal["mlm", "rtd"] = "mlm"  # which head of the model scores its rows
    needs_generators: bool = False  # samples replacements from the n-gram generators
    reads_unimodal: bool = False  # its rows may include unimodal code (train data then includes it)

    def rows(self, batch, cfg) -> torch.Tensor:
        raise NotImplementedError

    def view(self, batch, rows: torch.Tensor, selected: torch.Tensor, corruptor, rng: torch.Generator) -> View:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, view: View, reduction: Reduction) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) from its head's logits: (n_positions, V) for "mlm", (rows, T) for "rtd".

        reduction "sum": the sum over its positions (the caller divides by the batch's shared
        count); "mean": the mean. Metrics are per-position figures whatever the reduction.
        """
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
    """MLM on NL-code pairs (paper eqs. 3-4, 6): the selected NL and code positions masked, predicted."""

    name, head = "mlm", "mlm"

    def rows(self, batch, cfg) -> torch.Tensor:
        # The paper reads pairs; the code-only baseline masks every row, pairs having lost their docs.
        bimodal = ~batch.unimodal
        return bimodal if cfg.modality == "bimodal" else torch.ones_like(bimodal)

    def view(self, batch, rows, selected, corruptor, rng) -> View:
        chosen = selected & rows[:, None]
        masked = corruptor.masked(batch, chosen, rng)
        return View(rows, masked[rows], chosen[rows], {"tokens": batch.input_ids[rows][chosen[rows]]})

    def loss(self, logits, view, reduction):
        targets = view.targets["tokens"].to(logits.device)
        loss = mlm_loss(logits, targets, reduction)
        correct, total = mlm_accuracy(logits.detach(), targets)
        per_position = loss.detach() / max(total, 1) if reduction == "sum" else loss.detach()
        return loss, {"mlm_loss": per_position, "mlm_acc": correct / max(total, 1)}


@register
class ReplacedTokenDetection(Objective):
    """RTD (paper eqs. 7-13): the positions MLM masks replaced by n-gram generator samples; every
    token labelled original/replaced (a sample equal to the original counts as original)."""

    name, head, needs_generators, reads_unimodal = "rtd", "rtd", True, True

    def rows(self, batch, cfg) -> torch.Tensor:
        bimodal = ~batch.unimodal
        return torch.ones_like(bimodal) if cfg.unimodal_rtd else bimodal

    def view(self, batch, rows, selected, corruptor, rng) -> View:
        chosen = selected & rows[:, None]
        corrupted, is_replaced = corruptor.corrupted(batch, chosen, rng)
        return View(rows, corrupted[rows], None, {
            "is_replaced": is_replaced[rows], "selected": chosen[rows],
            "text": batch.segments[rows] > 0,  # eq. 12's positions: the NL and code tokens
            "valid": batch.attention_mask[rows].bool(),  # every non-padding position (ELECTRA's mean)
        })

    def loss(self, logits, view, reduction):
        labels = view.targets["is_replaced"].to(logits.device)
        positions = view.targets["text" if reduction == "sum" else "valid"].to(logits.device)
        loss = rtd_loss(logits, labels, positions, reduction)
        replaced = int(labels.sum()) / max(int(view.targets["selected"].sum()), 1)
        figures = RtdFigures.of(logits, labels, view.targets["text"].to(logits.device))
        return loss, {**figures.metrics(), "replaced_rate": replaced}
