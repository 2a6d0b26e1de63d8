"""Length-bucketed, resumable batches of any corpus: what every training stage iterates over.

A corpus is anything with `len()` and `lengths(max_length)` (a sorting key per example); the
stage's `collate_fn(corpus, indices, max_length)` turns chosen examples into its batch type.
"""

from __future__ import annotations

import numpy as np

from codebert.errors import UserError


class BucketedBatches:
    """An endless, resumable stream of batches of similar lengths.

    Each epoch: indices shuffled with (seed, epoch), cut into pools of `pool` batches, each pool
    sorted by length and cut into batches, and the batches shuffled again. The stream position is
    (epoch, batch index), so `state_dict()` after step N and `load_state_dict` resume exactly.
    With several processes (DDP), process r takes batches r, r + world, r + 2 * world, ...
    `groups` (one id per example, e.g. its language): every batch is cut from one group, and the
    batches of all groups are shuffled together, so that groups come up in proportion to their size.
    """

    def __init__(
        self, corpus, batch_size: int, max_length: int, seed: int, rank: int = 0, world: int = 1, *,
        collate_fn, pool: int = 50, groups: np.ndarray | None = None,
    ):
        if len(corpus) < batch_size * world:
            raise UserError(f"only {len(corpus)} examples for batches of {batch_size} on {world} process(es)")
        self.corpus, self.batch_size, self.max_length = corpus, batch_size, max_length
        self.collate_fn = collate_fn  # (corpus, indices, max_length) -> batch; any corpus with len() and lengths()
        self.seed, self.rank, self.world, self.pool = seed, rank, world, pool
        self.lengths = corpus.lengths(max_length)
        self.groups = None if groups is None else np.asarray(groups)  # (N,) group id of each example
        if self.groups is not None and len(self.groups) != len(corpus):
            raise ValueError(f"{len(self.groups)} group ids for {len(corpus)} examples")
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.corpus))
        members = [order] if self.groups is None else [order[self.groups[order] == g] for g in np.unique(self.groups)]
        chunk = self.batch_size * self.pool
        batches = []
        for group in members:
            for start in range(0, len(group), chunk):
                part = group[start : start + chunk]
                part = part[np.argsort(self.lengths[part], kind="stable")]
                batches += [part[i : i + self.batch_size] for i in range(0, len(part) - self.batch_size + 1, self.batch_size)]
        rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.world  # every process gets as many batches
        return batches[self.rank : usable : self.world]

    def __iter__(self):
        return self

    def __next__(self):
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        indices = self._batches[self.position]
        self.position += 1
        return self.collate_fn(self.corpus, indices, self.max_length)

    def batches_per_epoch(self) -> int:
        return len(self._batches)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._epoch_batches(self.epoch)
