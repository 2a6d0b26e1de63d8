"""Train/valid/test split by repository: no repository contributes to two splits."""

from __future__ import annotations

import hashlib
from collections import Counter


def _tiebreak(seed: int, repo: str) -> str:
    """A seeded pseudo-random but reproducible order of repositories (no global RNG involved)."""
    return hashlib.sha256(f"{seed}:{repo}".encode()).hexdigest()


def assign_repositories(sizes: Counter, fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Map each repository to a split so that the record counts approach `fractions`.

    Repositories are taken largest first (ties in seeded order) and each goes to the split that is
    furthest below its share of what has been assigned so far, counting the repository itself.
    The result depends only on the sizes, the fractions and the seed.
    """
    total_weight = sum(fractions.values())
    shares = {split: f / total_weight for split, f in fractions.items() if f > 0}
    assigned = dict.fromkeys(shares, 0)
    placed = 0
    result = {}
    for repo in sorted(sizes, key=lambda r: (-sizes[r], _tiebreak(seed, r))):
        placed += sizes[repo]
        split = max(shares, key=lambda s: (shares[s] * placed - assigned[s], shares[s]))
        assigned[split] += sizes[repo]
        result[repo] = split
    return result
