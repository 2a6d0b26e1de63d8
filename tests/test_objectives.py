"""MLM and RTD building blocks against hand-computed cases."""

from __future__ import annotations

import math

import torch

from codebert.pretrain import objectives

#                      <s>  NL NL NL NL NL NL NL NL NL NL </s></s> code x20                     </s> pad
SEGMENTS = torch.tensor([[0] + [1] * 10 + [0, 0] + [2] * 20 + [0, 0, 0]])


def test_selects_rate_of_each_segment_and_never_specials():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        selected = objectives.select_positions(SEGMENTS, 0.15, g)
        assert int((selected & (SEGMENTS == 1)).sum()) == 2  # round(1.5) = 2
        assert int((selected & (SEGMENTS == 2)).sum()) == 3
        assert not (selected & (SEGMENTS == 0)).any()


def test_short_segments_get_one_position_and_rows_can_be_excluded():
    segments = torch.tensor([[0, 1, 1, 0, 0, 2, 2, 2, 0], [0, 1, 1, 0, 0, 2, 2, 2, 0]])
    selected = objectives.select_positions(segments, 0.15, torch.Generator().manual_seed(1), rows=torch.tensor([True, False]))
    assert selected[0].sum() == 2 and selected[1].sum() == 0


def test_paper_masking_masks_everything_selected():
    ids = torch.arange(10, 20)[None]
    selected = torch.zeros_like(ids, dtype=torch.bool)
    selected[0, [1, 4]] = True
    out = objectives.mask_inputs(ids, selected, 4, "mask", torch.Generator(), 100)
    assert out[0, 1] == 4 and out[0, 4] == 4 and torch.equal(out[~selected], ids[~selected])


def test_bert_masking_is_80_10_10():
    ids = torch.full((1, 20000), 50)
    selected = torch.ones_like(ids, dtype=torch.bool)
    out = objectives.mask_inputs(ids, selected, 4, "bert", torch.Generator().manual_seed(0), 100)
    masked, kept = (out == 4).float().mean(), (out == 50).float().mean()
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.012  # a random token can be 50 again


def test_a_sample_equal_to_the_original_counts_as_original():
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    selected = torch.tensor([[False, True, True, False, False]])
    samples = torch.tensor([[0, 5, 9, 7, 2]])  # position 1 sampled its own token back
    corrupted, replaced = objectives.corrupt(ids, selected, samples)
    assert corrupted.tolist() == [[0, 5, 9, 7, 2]]
    assert replaced.tolist() == [[False, False, True, False, False]]


def test_rtd_loss_is_bce_over_the_given_positions_summed_or_averaged():
    logits = torch.tensor([[2.0, -1.0, 0.5, 9.0]])
    labels = torch.tensor([[True, False, False, True]])
    positions = torch.tensor([[True, True, True, False]])
    terms = [-math.log(1 / (1 + math.exp(-2.0))), -math.log(1 - 1 / (1 + math.exp(1.0))), -math.log(1 - 1 / (1 + math.exp(-0.5)))]
    assert abs(float(objectives.rtd_loss(logits, labels, positions)) - sum(terms) / 3) < 1e-6
    assert abs(float(objectives.rtd_loss(logits, labels, positions, "sum")) - sum(terms)) < 1e-6


def test_roc_auc_counts_ties_as_half_and_needs_both_classes():
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5) (0.9>0.1) (0.5=0.5: half) (0.5>0.1) -> 3.5 / 4
    assert objectives.roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    assert objectives.roc_auc([3.0, 2.0, 1.0], [0, 0, 1]) == 0.0  # ranked exactly backwards
    assert objectives.roc_auc([1.0, 1.0, 1.0, 1.0], [1, 0, 0, 0]) == 0.5  # a constant ranks nothing
    assert math.isnan(objectives.roc_auc([1.0, 2.0], [0, 0]))


def test_rtd_figures_read_a_constant_answer_as_the_floor():
    # A discriminator that answers the base rate everywhere: its loss is the base rate's entropy,
    # its accuracy the share of originals, its AUC one half.
    labels = torch.tensor([True] + [False] * 9)
    logits = torch.full((10,), math.log(0.1 / 0.9))
    figures = objectives.RtdFigures.of(logits, labels, torch.ones(10, dtype=torch.bool))
    entropy = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    assert abs(figures.loss - entropy) < 1e-6 and abs(figures.base_loss - entropy) < 1e-6
    assert figures.acc == 0.9 and abs(figures.floor - 0.9) < 1e-6 and figures.auc == 0.5


def test_mlm_loss_and_accuracy():
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [5.0, 0.0, 0.0]])
    targets = torch.tensor([2, 1])
    expected = (-math.log(2 / 4) - math.log(1 / (math.exp(5) + 2))) / 2
    assert abs(float(objectives.mlm_loss(logits, targets)) - expected) < 1e-6
    assert objectives.mlm_accuracy(logits, targets) == (1, 2)
    assert abs(float(objectives.mlm_loss(logits, targets, "sum")) - 2 * expected) < 1e-6
