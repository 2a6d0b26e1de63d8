"""Bidirectional n-gram generators for replaced-token detection (paper §3.4, Figure 2).

CodeBERT's generators are "efficient n-gram language models with bidirectional contexts", one
for NL (learned from the documentation of bimodal data) and one for code (learned from unimodal
code). No maintained library offers a *bidirectional* n-gram sampler over arbitrary token ids, so
this module writes one with numpy.

Model. For a masked position with up to `context` unmasked tokens on each side (within its own
segment), the proposal is drawn from the empirical distribution of the tokens seen between the
same left and right context in the training data. Contexts are tried longest first,
(2,2), (2,1), (1,2), (1,1), (2,0), (0,2), (1,0), (0,1), (0,0) for context=2 (left, right); the first
context seen in training answers ("stupid back-off" without discounting: we sample, we never score).

Self-prediction. Sampled on the very text it was counted from, a context seen once proposes the
original token again (a quick measurement on synthetic data found 44% of samples equal to the
original). The NL generator is counted on the same bimodal documentation that pre-training
corrupts, and unimodal code is both counted and corrupted. The remedy here is leave-one-out:
when a sequence was part of the counts, the occurrence being replaced is subtracted from them
(the original's count in that context minus one), and a context left with no other occurrence
backs off to a shorter one. Pass `leave_one_out=False` for text that was not counted.

Storage: one `.npz` per generator, plain numeric arrays (loaded with allow_pickle=False).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codebert.backbone import sha256_of
from codebert.config import option
from codebert.corpus.jsonl import UNIMODAL, corpus_files
from codebert.errors import UserError
from codebert.tables import format_table
from codebert.io import atomic_write

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: multiplicative hashing of contexts
_BOUNDARY = -1  # separates sequences in the flat training array; contexts never cross it


def context_patterns(context: int) -> list[tuple[int, int]]:
    """(left, right) context sizes from longest to shortest, balanced before one-sided."""
    patterns = [(left, right) for left in range(context + 1) for right in range(context + 1)]
    return sorted(patterns, key=lambda p: (-(p[0] + p[1]), abs(p[0] - p[1]), -p[0]))


def _narrow(values: np.ndarray) -> np.ndarray:
    """The smallest unsigned type that holds non-negative `values` (halves the files on real corpora)."""
    top = int(values.max()) if len(values) else 0
    for dtype in (np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values.astype(np.int64)


def _hash_contexts(pattern_id: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """64-bit keys of contexts. left: (n, l) nearest token last; right: (n, r) nearest token first."""
    n = left.shape[0] if left.ndim == 2 else right.shape[0]
    key = np.full(n, pattern_id + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in (*left.T, *right.T):
            key = (key * _MULT) ^ (column.astype(np.uint64) + np.uint64(1))
            key ^= key >> np.uint64(29)
    return key


@dataclass
class _Table:
    """Counts of (context, token) for one (left, right) pattern, grouped by context key."""

    keys: np.ndarray  # (G,) uint64, sorted: one per distinct context
    starts: np.ndarray  # (G + 1,) unsigned: entries of group g are starts[g]:starts[g + 1]
    tokens: np.ndarray  # (E,) unsigned: tokens seen in each context, ascending within a group
    cumulative: np.ndarray  # (E,) unsigned: running count over all entries (group g's total = cum[end-1] - cum[start-1])

    def entry_order(self, vocab_size: int) -> np.ndarray:
        """group * vocab + token for every entry: increasing, so (group, token) is a binary search."""
        groups = np.repeat(np.arange(len(self.keys), dtype=np.int64), np.diff(self.starts.astype(np.int64)))
        return groups * vocab_size + self.tokens


class NgramGenerator:
    """A bidirectional n-gram sampler over token ids."""

    def __init__(self, context: int, vocab_size: int, tables: dict[tuple[int, int], _Table], meta: dict[str, Any]):
        self.context = context
        self.vocab_size = vocab_size
        self.patterns = context_patterns(context)
        self.tables = tables
        self.meta = meta
        self._orders = {p: t.entry_order(vocab_size) for p, t in tables.items()}

    # ----------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, sequences: Iterable[Sequence[int] | np.ndarray], vocab_size: int, context: int = 2) -> NgramGenerator:
        """Count every (context, token) of every pattern in `sequences` (lists of token ids)."""
        parts, n_sequences = [], 0
        for seq in sequences:
            parts.append(np.asarray(seq, dtype=np.int64))
            parts.append(np.array([_BOUNDARY], dtype=np.int64))
            n_sequences += 1
        flat = np.concatenate(parts) if parts else np.array([_BOUNDARY], dtype=np.int64)
        # Pad so that every window below is in bounds; padding is a boundary too.
        padded = np.concatenate([np.full(context, _BOUNDARY), flat, np.full(context, _BOUNDARY)])
        centers = np.nonzero(padded != _BOUNDARY)[0]
        tables = {}
        for pid, (left, right) in enumerate(context_patterns(context)):
            lefts = np.stack([padded[centers - j] for j in range(left, 0, -1)], axis=1) if left else np.empty((len(centers), 0), np.int64)
            rights = np.stack([padded[centers + j] for j in range(1, right + 1)], axis=1) if right else np.empty((len(centers), 0), np.int64)
            ok = np.all(lefts != _BOUNDARY, axis=1) & np.all(rights != _BOUNDARY, axis=1)
            keys = _hash_contexts(pid, lefts[ok], rights[ok])
            tokens = padded[centers[ok]]
            order = np.lexsort((tokens, keys))
            keys, tokens = keys[order], tokens[order]
            # Distinct (key, token) entries with their counts.
            new_entry = np.ones(len(keys), dtype=bool)
            new_entry[1:] = (keys[1:] != keys[:-1]) | (tokens[1:] != tokens[:-1])
            entry_idx = np.nonzero(new_entry)[0]
            counts = np.diff(np.append(entry_idx, len(keys)))
            entry_keys, entry_tokens = keys[entry_idx], tokens[entry_idx]
            new_group = np.ones(len(entry_keys), dtype=bool)
            new_group[1:] = entry_keys[1:] != entry_keys[:-1]
            group_idx = np.nonzero(new_group)[0]
            tables[(left, right)] = _Table(
                keys=entry_keys[group_idx],
                starts=_narrow(np.append(group_idx, len(entry_keys))),
                tokens=_narrow(entry_tokens),
                cumulative=_narrow(np.cumsum(counts)),
            )
        meta = {"sequences": n_sequences, "tokens": int(len(centers))}
        return cls(context, vocab_size, tables, meta)

    # ---------------------------------------------------------------------------------- sampling
    def sample(
        self,
        left: np.ndarray,
        left_len: np.ndarray,
        right: np.ndarray,
        right_len: np.ndarray,
        original: np.ndarray,
        leave_one_out: np.ndarray | bool,
        uniform: np.ndarray,
    ) -> np.ndarray:
        """One proposal per query.

        left: (n, context) tokens before the position, nearest last (unused slots ignored);
        left_len: (n,) how many of them are usable (unmasked, same segment); likewise right
        (nearest first) and right_len; original: (n,) the token being replaced; leave_one_out:
        (n,) or scalar, whether that occurrence was part of the counts; uniform: (n,) numbers in
        [0, 1) (from the caller's seeded RNG, so sampling is reproducible and resumable).
        """
        n = len(original)
        result = np.full(n, -1, dtype=np.int64)
        loo = np.broadcast_to(np.asarray(leave_one_out, dtype=bool), (n,))
        original = np.asarray(original, dtype=np.int64)
        for pid, (lsize, rsize) in enumerate(self.patterns):
            todo = np.nonzero((result < 0) & (left_len >= lsize) & (right_len >= rsize))[0]
            if len(todo) == 0:
                continue
            table = self.tables[(lsize, rsize)]
            if len(table.keys) == 0:
                continue
            keys = _hash_contexts(pid, left[todo, self.context - lsize :], right[todo, :rsize])
            g = np.searchsorted(table.keys, keys)
            g_clipped = np.minimum(g, len(table.keys) - 1)
            found = (g < len(table.keys)) & (table.keys[g_clipped] == keys)
            todo, g = todo[found], g_clipped[found]
            # Gathered values become int64 here: the tables stay narrow, the arithmetic never wraps.
            start, end = table.starts[g].astype(np.int64), table.starts[g + 1].astype(np.int64)
            base = np.where(start > 0, table.cumulative[np.maximum(start - 1, 0)].astype(np.int64), 0)
            total = table.cumulative[end - 1].astype(np.int64) - base
            # The original's own occurrence, to leave out where it was counted.
            order = self._orders[(lsize, rsize)]
            wanted = g.astype(np.int64) * self.vocab_size + original[todo]
            e = np.minimum(np.searchsorted(order, wanted), len(order) - 1)
            has_original = (order[e] == wanted) & loo[todo]
            orig_end = table.cumulative[e].astype(np.int64) - base  # offset just past the original's slot
            total = total - has_original
            usable = total > 0
            todo, base, total, has_original, orig_end = todo[usable], base[usable], total[usable], has_original[usable], orig_end[usable]
            offset = np.floor(uniform[todo] * total).astype(np.int64)
            # Skip the left-out unit: the last one of the original's slot.
            offset = offset + (has_original & (offset >= orig_end - 1))
            # Search in the table's own dtype: mixing types would copy the whole table per call.
            entry = np.searchsorted(table.cumulative, (base + offset).astype(table.cumulative.dtype), side="right")
            result[todo] = table.tokens[entry]
        # Every query reaches the unigram table unless the generator is empty.
        leftover = result < 0
        result[leftover] = original[leftover]
        return result

    # --------------------------------------------------------------------------------- storage
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {"context": np.array(self.context), "vocab_size": np.array(self.vocab_size)}
        for (left, right), table in self.tables.items():
            for name in ("keys", "starts", "tokens", "cumulative"):
                arrays[f"{left}_{right}_{name}"] = getattr(table, name)
        arrays["meta"] = np.frombuffer(json.dumps(self.meta).encode("utf-8"), dtype=np.uint8)
        with atomic_write(path, binary=True) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> NgramGenerator:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such generator file (fit one with `codebert generators fit`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                context, vocab = int(data["context"]), int(data["vocab_size"])
                tables = {
                    p: _Table(*(data[f"{p[0]}_{p[1]}_{name}"] for name in ("keys", "starts", "tokens", "cumulative")))
                    for p in context_patterns(context)
                }
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{path}: not a generator file ({exc})") from None
        return cls(context, vocab, tables, meta)

    def size_bytes(self) -> int:
        return sum(a.nbytes for t in self.tables.values() for a in (t.keys, t.starts, t.tokens, t.cumulative))


def gather_contexts(
    ids: np.ndarray, positions: np.ndarray, usable: np.ndarray, context: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left/right contexts of `positions` in a (B, T) id array.

    positions: (n, 2) rows of (batch index, position). usable: (B, T) bool, True where a token
    may serve as context for a position of the same segment. The caller passes usable =
    "same segment and not masked" per segment; contexts stop at the first unusable token.
    Returns left (n, context) nearest last, left_len, right (n, context) nearest first, right_len.
    """
    b, t = positions[:, 0], positions[:, 1]
    T = ids.shape[1]
    n = len(b)
    left = np.zeros((n, context), dtype=np.int64)
    right = np.zeros((n, context), dtype=np.int64)
    left_len = np.zeros(n, dtype=np.int64)
    right_len = np.zeros(n, dtype=np.int64)
    still_left = np.ones(n, dtype=bool)
    still_right = np.ones(n, dtype=bool)
    for j in range(1, context + 1):
        lp, rp = t - j, t + j
        ok_l = still_left & (lp >= 0)
        ok_l[ok_l] = usable[b[ok_l], lp[ok_l]]
        left[ok_l, context - j] = ids[b[ok_l], lp[ok_l]]
        left_len += ok_l
        still_left = ok_l
        ok_r = still_right & (rp < T)
        ok_r[ok_r] = usable[b[ok_r], rp[ok_r]]
        right[ok_r, j - 1] = ids[b[ok_r], rp[ok_r]]
        right_len += ok_r
        still_right = ok_r
    return left, left_len, right, right_len


def replaced_rate(generator: NgramGenerator, sequences: list[np.ndarray], rate: float, leave_one_out: bool, seed: int = 0) -> float:
    """Share of masked positions whose sample differs from the original (what RTD can learn from)."""
    rng = np.random.default_rng(seed)
    replaced = total = 0
    for seq in sequences:
        if len(seq) == 0:
            continue
        k = max(1, round(rate * len(seq)))
        pos = rng.choice(len(seq), size=min(k, len(seq)), replace=False)
        ids = seq[None, :]
        usable = np.ones_like(ids, dtype=bool)
        usable[0, pos] = False
        positions = np.stack([np.zeros_like(pos), pos], axis=1)
        left, ll, right, rl = gather_contexts(ids, positions, usable, generator.context)
        samples = generator.sample(left, ll, right, rl, seq[pos], leave_one_out, rng.random(len(pos)))
        replaced += int((samples != seq[pos]).sum())
        total += len(pos)
    return replaced / max(total, 1)



# ------------------------------------------------------------------- what a generator counted
# Leave-one-out subtracts the occurrence being replaced from the counts: right only for text the
# generator counted. Each generator file records the records it counted (the corpus files by
# content, and the per-file record limit), so that pre-training can check its own records are
# among them instead of trusting the user to pass matching folders.
COUNTED_FILES = {"nl": "train", "code": UNIMODAL}  # which file of each language each generator counts


def counted_records(data: Path, languages: list[str] | None, split: str, max_records: int) -> dict[str, Any]:
    """What reading `split` of `data` with these options covers: {"max_records", "files": {lang/file: sha256}}.

    Files are named by content (SHA-256): a moved folder still matches, a re-extracted one does not.
    """
    files = corpus_files(data, languages or None)
    return {
        "max_records": max_records,
        "files": {f"{lang}/{paths[split].name}": sha256_of(paths[split]) for lang, paths in sorted(files.items()) if split in paths},
    }


def leave_one_out_problem(name: str, meta: dict[str, Any], reading: dict[str, Any]) -> str | None:
    """Why leave-one-out against generator `name` would be wrong for the records `reading` covers, or None.

    Right when every file pre-training reads was counted with the same content, and the records read
    from it are among those counted: the generator read every record (max_records 0), or at least
    as many as pre-training reads from the top of the file.
    """
    counted = meta.get("counted")
    if counted is None:
        return f"the {name} generator does not record which records it counted (fit before this was recorded)"
    for file, digest in reading["files"].items():
        if counted["files"].get(file) != digest:
            state = "did not count" if file not in counted["files"] else "counted another version of"
            return f"the {name} generator {state} {file}"
    limit, read = counted["max_records"], reading["max_records"]
    if limit and (read == 0 or read > limit):
        return f"the {name} generator counted the first {limit} records of each file, pre-training reads {read or 'all'}"
    return None


# ------------------------------------------------------------------------------ the fit stage
@dataclass
class FitGeneratorsConfig:
    data: Path = option(help="corpus folder: NL from the docs of train, code from unimodal")
    tokenizer: Path = option(help="tokenizer folder the generators propose ids of")
    out: Path = option(help="folder to write nl.npz, code.npz and generators.json to")
    context: int = option(2, "tokens of context on each side (n-gram order 2 * context + 1)")
    languages: list[str] = option([], "languages to learn from (empty: all)")
    max_records: int = option(0, "read at most this many records per language and file (0: all)")
    rate_sample: int = option(2000, "sequences used to measure the replaced-token rate")

    def validate(self) -> list[str]:
        problems = []
        if not 1 <= self.context <= 4:
            problems.append("--context: must be in [1, 4]")
        if self.max_records < 0:
            problems.append("--max-records: must be >= 0")
        if self.rate_sample < 1:  # a negative count would slice from the end: most of the data, silently
            problems.append("--rate-sample: must be >= 1")
        if not self.data.is_dir():
            problems.append(f"--data {self.data}: no such folder")
        return problems


def fit_main(cfg: FitGeneratorsConfig) -> dict[str, Any]:
    # Imported here: torch and transformers only for `generators fit`: sampling is numpy, and `--help` stays instant.
    from codebert.pretrain.data import encode_corpus
    from codebert.backbone import load_tokenizer

    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg.tokenizer)
    vocab = len(tokenizer)
    train = encode_corpus(cfg.data, tokenizer, "train", cfg.languages, include_unimodal=True, max_records=cfg.max_records)
    valid = encode_corpus(cfg.data, tokenizer, "valid", cfg.languages, include_unimodal=False, max_records=cfg.max_records)
    nl_docs = [x for x, uni in zip(train.nl, train.unimodal) if not uni]
    unimodal_code = [x for x, uni in zip(train.code, train.unimodal) if uni]
    bimodal_code = [x for x, uni in zip(train.code, train.unimodal) if not uni]
    if not nl_docs or not unimodal_code:
        raise UserError(f"{cfg.data}: the NL generator needs train docs and the code generator unimodal code")
    fitted = {"nl": NgramGenerator.fit(nl_docs, vocab, cfg.context), "code": NgramGenerator.fit(unimodal_code, vocab, cfg.context)}
    cfg.out.mkdir(parents=True, exist_ok=True)
    rates: dict[str, float] = {}
    n = cfg.rate_sample
    # What pre-training will see: NL and code of train pairs; plus text neither generator counted.
    rates["nl_train_leave_one_out"] = replaced_rate(fitted["nl"], nl_docs[:n], 0.15, True)
    rates["nl_train_without_leave_one_out"] = replaced_rate(fitted["nl"], nl_docs[:n], 0.15, False)
    rates["nl_valid"] = replaced_rate(fitted["nl"], valid.nl[:n], 0.15, False)
    rates["code_bimodal_train"] = replaced_rate(fitted["code"], bimodal_code[:n], 0.15, False)
    rates["code_unimodal_leave_one_out"] = replaced_rate(fitted["code"], unimodal_code[:n], 0.15, True)
    rates["code_unimodal_without_leave_one_out"] = replaced_rate(fitted["code"], unimodal_code[:n], 0.15, False)
    for name, generator in fitted.items():
        generator.meta.update(tokenizer=str(cfg.tokenizer), source="train docs" if name == "nl" else "unimodal code",
                              data=str(cfg.data), languages=cfg.languages,
                              counted=counted_records(cfg.data, cfg.languages, COUNTED_FILES[name], cfg.max_records))
        generator.save(cfg.out / f"{name}.npz")
    figures = {
        "out": str(cfg.out),
        "nl_tokens": fitted["nl"].meta["tokens"],
        "code_tokens": fitted["code"].meta["tokens"],
        "nl_megabytes": round(fitted["nl"].size_bytes() / 1e6, 1),
        "code_megabytes": round(fitted["code"].size_bytes() / 1e6, 1),
        "replaced_rate": {k: round(v, 4) for k, v in rates.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    (cfg.out / "generators.json").write_text(json.dumps(figures, indent=2))
    return figures


def fit_render(figures: dict[str, Any]) -> str:
    sizes = format_table(
        ["generator", "training tokens", "size (MB)"],
        [["nl (train docs)", figures["nl_tokens"], figures["nl_megabytes"]],
         ["code (unimodal)", figures["code_tokens"], figures["code_megabytes"]]],
    )
    rates = format_table(["replaced-token rate at 15% masking", "share"], list(figures["replaced_rate"].items()))
    return f"{sizes}\n\n{rates}\n\nfitted in {figures['seconds']} s, saved to {figures['out']}"
