"""MLM and RTD as pure tensor functions: selection, masking, corruption, losses, accuracies.

Segments: every batch carries a (B, T) `segments` tensor with 0 for special tokens and padding,
1 for NL tokens and 2 for code tokens (the layout `<s> NL </s></s> CODE </s>`).
"""

from __future__ import annotations

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
