"""De-duplication: exact copies within a language, and near-duplicates that leak across splits.

Near-duplicates are found with MinHash LSH (datasketch) on the *set* of code tokens and then
verified exactly, so a pair is dropped only if its true Jaccard similarity reaches the threshold.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128  # MinHash permutations (CodeSearchNet's and csn6's choice)
_SPACE = re.compile(r"\s+")


def code_key(record: dict[str, Any]) -> bytes:
    """Identity of a function's code ignoring white space (exact duplicates share it)."""
    return hashlib.blake2b(_SPACE.sub("", record["code"]).encode("utf-8"), digest_size=16).digest()


def summary_key(record: dict[str, Any]) -> str:
    """A doc summary lower-cased with white space collapsed: equal keys are the same query."""
    return " ".join(record["docstring_tokens"]).lower()


def drop_exact_duplicates(records: list[dict[str, Any]], seen: set[bytes], reasons: Counter) -> list[dict[str, Any]]:
    """Keep the first record of each code (in the given order); `seen` carries over between calls."""
    kept = []
    for record in records:
        key = code_key(record)
        if key in seen:
            reasons["function:duplicate"] += 1
            continue
        seen.add(key)
        kept.append(record)
    return kept


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _minhashes(token_sets: list[set[str]]) -> list[MinHash]:
    return MinHash.bulk([[t.encode("utf-8") for t in s] for s in token_sets], num_perm=NUM_PERM)


def near_duplicate_mask(
    references: list[dict[str, Any]], candidates: list[dict[str, Any]], threshold: float
) -> list[bool]:
    """For each candidate, whether its code-token set has Jaccard >= threshold with any reference."""
    if not references or not candidates:
        return [False] * len(candidates)
    ref_sets = [set(r["code_tokens"]) for r in references]
    cand_sets = [set(c["code_tokens"]) for c in candidates]
    # LSH only proposes candidates; above 0.9 it has too few bands to work, and a lower threshold
    # proposes more pairs, which the exact check below then sorts out.
    lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, mh in enumerate(_minhashes(ref_sets)):
            session.insert(i, mh)
    mask = []
    for cand, mh in zip(cand_sets, _minhashes(cand_sets)):
        # LSH proposes; the exact Jaccard decides, so no false positive removes a record.
        mask.append(any(jaccard(cand, ref_sets[i]) >= threshold for i in lsh.query(mh)))
    return mask
