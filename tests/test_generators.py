"""The n-gram generators: back-off, sampling proportions, leave-one-out, storage."""

from __future__ import annotations

import numpy as np
import pytest

from codebert.errors import UserError
from codebert.pretrain.generators import NgramGenerator, context_patterns, gather_contexts, replaced_rate


def query(generator, seq, position, loo, uniforms):
    ids = np.array([seq])
    usable = np.ones_like(ids, dtype=bool)
    usable[0, position] = False
    left, ll, right, rl = gather_contexts(ids, np.array([[0, position]]), usable, generator.context)
    n = len(uniforms)
    return generator.sample(np.repeat(left, n, 0), np.repeat(ll, n), np.repeat(right, n, 0), np.repeat(rl, n),
                            np.full(n, seq[position]), loo, np.asarray(uniforms))


def test_patterns_go_from_long_balanced_to_unigram():
    assert context_patterns(2) == [(2, 2), (2, 1), (1, 2), (1, 1), (2, 0), (0, 2), (1, 0), (0, 1), (0, 0)]


def test_samples_follow_the_counts_of_the_full_context():
    # Between (7, 8) and (9, 10): token 20 three times, token 21 once.
    seqs = [[7, 8, 20, 9, 10]] * 3 + [[7, 8, 21, 9, 10]]
    g = NgramGenerator.fit(seqs, 50, context=2)
    draws = query(g, [7, 8, 20, 9, 10], 2, False, np.linspace(0, 0.999, 400))
    assert set(draws) == {20, 21}
    assert abs((draws == 20).mean() - 0.75) < 0.01


def test_unseen_context_backs_off_to_shorter_ones():
    g = NgramGenerator.fit([[1, 2, 3, 4, 5]], 10, context=2)
    # Right context (4, 5) seen, left context (9, 9) never: (0, 2) answers with 3.
    assert set(query(g, [9, 9, 0, 4, 5], 2, False, [0.1, 0.5, 0.9])) == {3}


def test_leave_one_out_removes_the_occurrence_being_replaced():
    g = NgramGenerator.fit([[10, 11, 12, 13, 14]], 20, context=2)
    without = query(g, [10, 11, 12, 13, 14], 2, False, np.linspace(0, 0.99, 50))
    assert set(without) == {12}  # self-prediction: the only thing this context ever saw
    loo = query(g, [10, 11, 12, 13, 14], 2, True, np.linspace(0, 0.99, 50))
    assert 12 not in set(loo) and set(loo) == {10, 11, 13, 14}  # backs off to the unigram, minus itself


def test_leave_one_out_keeps_other_occurrences_of_the_original():
    g = NgramGenerator.fit([[1, 2, 5, 3, 4], [1, 2, 5, 3, 4], [1, 2, 6, 3, 4]], 10, context=2)
    draws = query(g, [1, 2, 5, 3, 4], 2, True, np.linspace(0, 0.999, 300))
    assert abs((draws == 5).mean() - 0.5) < 0.02 and abs((draws == 6).mean() - 0.5) < 0.02


def test_contexts_stop_at_masked_tokens_and_segment_ends():
    ids = np.array([[0, 5, 6, 7, 2, 2, 8, 9, 2]])
    usable = np.array([[0, 1, 1, 1, 0, 0, 1, 1, 0]], dtype=bool)
    usable[0, 2] = False  # position 2 is masked itself; position 6's left neighbour is a separator
    left, ll, right, rl = gather_contexts(ids, np.array([[0, 3], [0, 6]]), usable, 2)
    assert ll.tolist() == [0, 0] and rl.tolist() == [0, 1]
    assert right[1, 0] == 9


def test_leave_one_out_fixes_self_prediction_on_counted_text():
    rng = np.random.default_rng(0)
    seqs = [rng.zipf(1.3, size=30).clip(5, 499) for _ in range(1000)]
    g = NgramGenerator.fit(seqs, 500, context=2)
    counted = replaced_rate(g, seqs[:300], 0.15, leave_one_out=False)
    fixed = replaced_rate(g, seqs[:300], 0.15, leave_one_out=True)
    fresh = replaced_rate(g, [rng.zipf(1.3, size=30).clip(5, 499) for _ in range(300)], 0.15, leave_one_out=False)
    assert counted < fixed - 0.15  # without the remedy, many samples repeat the original
    assert abs(fixed - fresh) < 0.05  # with it, counted text behaves like unseen text


def test_save_and_load_round_trip(tmp_path):
    g = NgramGenerator.fit([[1, 2, 3, 4], [2, 3, 4, 5]], 10)
    g.save(tmp_path / "g.npz")
    back = NgramGenerator.load(tmp_path / "g.npz")
    u = np.linspace(0, 0.99, 20)
    assert (query(g, [1, 2, 3, 4], 1, True, u) == query(back, [1, 2, 3, 4], 1, True, u)).all()
    with pytest.raises(UserError):
        NgramGenerator.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a generator file"):
        NgramGenerator.load(tmp_path / "bad.npz")
