"""How the search index scales: exact vs approximate FAISS structures at 100k .. 1M functions.

What is measured (issue 16, item 6; docs/scale.md reads the results), on the CPU with
`faiss.omp_set_num_threads(--threads)` (default 2, the machine's cores):

  * at every size in --sizes (default 100k, 250k, 1M): exact search two ways -- IndexFlatIP (what
    `build_faiss` builds up to --exact-limit) and one numpy matrix product over the vectors (what
    IndexStore does for an exact index in the working tree this was written against) -- each with
    --threads threads and with 1 thread; and HNSW (M = 32, efConstruction = FAISS's default 40, as
    `build_faiss` builds it above --exact-limit) at efSearch 64 / 128 / 256, at the sizes in
    --hnsw-sizes (default: those <= 250k; at larger sizes it is extrapolated and marked so; pass
    --sizes 1000000 --hnsw-sizes 1000000 --exact-hnsw-only to build it once at 1M);
  * at the largest size also: a scalar-quantised flat index (SQ8: an exact scan of 1-byte codes),
    IVF-Flat (nlist = 4*sqrt(N) rounded to a power of 2, nprobe 8 / 16 / 32 / 64) and IVF-PQ
    (48 bytes per vector) without and with a re-rank of its top 100 against the float vectors,
    read from a memory-mapped vectors.npy (which our index folder already holds). The IVF coarse
    quantizer is trained once (spherical k-means, 10 iterations on 16 points per list, in numpy:
    FAISS's own k-means and assignment ran ~3x slower than numpy's BLAS on this machine) and its
    time is counted in both IVF build times.

For each: memory (bytes of the serialised index -- written with faiss.write_index, the same bytes as
faiss.serialize_index -- and the process's growth while building it, both as RSS and as glibc heap
in use: RSS hides memory that is reused after an earlier free), build time, load time (read_index
of that file, as `codebert query` does on start), single-query latency p50 / p99 (one query at a
time, as a user's query; --latency-queries queries x --reps repetitions, shuffled, cut off after
--time-cap seconds once --min-samples are in) with the process CPU time per query next to it (with
one thread, ~ the latency on an otherwise idle core), throughput on batches of 64 queries (median
batch), and recall@10 against exact search (numpy float32) on --queries queries. Ratios are against
the exact IndexFlatIP row of the same size, measured in the same run. The load average is printed
at the start, at the end and on every row: on a shared 2-core machine other jobs show up as a
higher load and slower wall times.

The vectors (why not uniform random). Uniform random unit vectors in 384 dimensions have no
neighbourhood structure: every point is almost equally far from every other (cosines ~ N(0, 1/384)),
so the "true" top 10 is noise, and every ANN method looks far worse than on real embeddings. Real
sentence-transformer embeddings are anisotropic (a shared mean direction, a decaying spectrum) and
clustered at several scales (the functions of one class, file or library resemble each other).
The generator (`Corpus`) reproduces that, with parameters (`GEN`) calibrated against a real index:
the 16,539 functions of the Python standard library as `codebert quickstart` indexed them with its
fine-tuned all-MiniLM-L6-v2 bi-encoder (codebert-quickstart/index/vectors-g.npy), queried with 400
docstrings of the quickstart corpus' test split encoded by the same model.

  base vectors  x = normalise(mean + topic + group + leaf + noise): gaussian terms in one rotated
                spectrum, variances ~ i^-0.5 * exp(-i / (120 * dim / 384)) (fitted to the real
                index's PCA; the within-leaf noise decays faster, i^-0.75). 200 topics are shared by
                the whole corpus; groups ("a library", ~400 functions) and leaves ("a class or a
                file", ~6 functions; log-normal sizes) are generated in order, so the first 100k
                rows are a corpus of their own and the larger sizes are supersets of it (more code
                brings more groups, as more repositories do).
  queries       a random base vector (the function a user looks for, among the first min(--sizes)
                rows, so that it exists at every size) plus gaussian noise -- part in the data's
                spectrum, part isotropic (a docstring's embedding lies off the code manifold), its
                scale log-normal per query (precise and vague queries) -- re-normalised.

At the real index's size (--compare-real VECTORS.npy [QUERIES.npy] prints the table) the two agree
on the mean direction (|mean| 0.36 vs 0.35), the random cosine (0.13 vs 0.12), the queries' 1st and
10th neighbour cosines (0.82 / 0.53 vs 0.84 / 0.58) and IVF recall@10 at nprobe 1 and 4 (0.51 / 0.79
vs 0.49 / 0.83). Where they differ the synthetic set is harder for HNSW (recall@10 at efSearch 32:
0.978 vs 0.992 real) and easier for IVF at a high nprobe (nprobe 16: 0.988 vs 0.914 real), and its
local dimension is higher (LID 22 vs 11): read HNSW's recall here as a slight underestimate, IVF's
as an overestimate.

Run (the default run took 12-13 minutes on a busy 2-core machine; --quick is a ~1-minute smoke run):

    .venv/bin/python benchmarks/scale_index.py [--sizes 100000 250000 1000000] [--dim 384]
        [--queries 500] [--threads 2] [--hnsw-sizes 100000 250000] [--compare-real VECTORS.npy [QUERIES.npy]]
        [--exact-hnsw-only] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------------------------ vectors
GEN = {
    "topics": 200,          # coarse clusters shared by the whole corpus
    "group_mean": 400,      # functions per group ("a library"; mean of a log-normal)
    "leaf_mean": 6,         # functions per leaf cluster ("a class or a file"; mean of a log-normal)
    "mean": 0.30,           # length of the shared mean direction (before normalising)
    "topic": 0.45,          # spread of topic centres
    "group": 0.40,          # spread of group centres around their topic
    "leaf": 0.35,           # spread of leaf centres around their group
    "noise": 0.55,          # spread of functions around their leaf centre
    "noise_decay": 0.75,    # spectrum exponent of that noise (the other terms use 0.5)
    "q_manifold": 0.30,     # query noise in the data's spectrum
    "q_iso": 0.60,          # isotropic query noise
    "q_spread": 0.60,       # per-query noise scale ~ log-normal(sigma): precise and vague queries
}


def _basis(dim: int, rot: np.ndarray, decay: float) -> np.ndarray:
    """A matrix B with z @ B ~ N(0, R diag(lam) R^T), trace 1, for z ~ N(0, I)."""
    i = np.arange(1, dim + 1, dtype=np.float64)
    lam = i ** -decay * np.exp(-i / (120.0 * dim / 384))
    lam /= lam.sum()
    return (np.sqrt(lam)[:, None] * rot.T).astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _lognormal_sizes(rng: np.random.Generator, mean: float, count: int, sigma: float = 0.8) -> np.ndarray:
    return np.maximum(1, np.round(rng.lognormal(math.log(mean) - sigma ** 2 / 2, sigma, count))).astype(np.int64)


class Corpus:
    """Clustered, anisotropic unit vectors (see the module's docstring); deterministic in `seed`."""

    def __init__(self, dim: int, seed: int = 0, **params: float):
        self.dim, self.seed, self.p = dim, seed, {**GEN, **params}
        rng = np.random.default_rng(seed)
        rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.basis = _basis(dim, rot, 0.5)
        self.noise_basis = _basis(dim, rot, self.p["noise_decay"])
        mean = rng.standard_normal(dim).astype(np.float32) @ self.basis
        self.mean = (self.p["mean"] * mean / np.linalg.norm(mean)).astype(np.float32)
        self.topics = self.p["topic"] * (rng.standard_normal((int(self.p["topics"]), dim), dtype=np.float32) @ self.basis)

    def _gauss(self, rng: np.random.Generator, n: int, basis: np.ndarray | None = None) -> np.ndarray:
        return rng.standard_normal((n, self.dim), dtype=np.float32) @ (self.basis if basis is None else basis)

    def vectors(self, n: int, chunk: int = 100_000) -> np.ndarray:
        """n rows; vectors(m)[:k] == vectors(k)[:k] for k <= m (sizes are prefixes of one corpus)."""
        rng = np.random.default_rng(self.seed + 1)
        out = np.empty((n, self.dim), dtype=np.float32)
        filled = 0
        while filled < n:
            # a block of groups, each split into leaves, then their functions chunk rows at a time
            group_sizes = _lognormal_sizes(rng, self.p["group_mean"], 256)
            group_centres = self.mean + self.topics[rng.integers(0, len(self.topics), len(group_sizes))] \
                + self.p["group"] * self._gauss(rng, len(group_sizes))
            leaf_sizes = _lognormal_sizes(rng, self.p["leaf_mean"], int(group_sizes.sum()))
            leaf_sizes = leaf_sizes[: np.searchsorted(np.cumsum(leaf_sizes), group_sizes.sum()) + 1]
            leaf_group = np.minimum(np.searchsorted(np.cumsum(group_sizes), np.cumsum(leaf_sizes) - leaf_sizes, side="right"),
                                    len(group_sizes) - 1)
            leaf_centres = group_centres[leaf_group] + self.p["leaf"] * self._gauss(rng, len(leaf_sizes))
            owner = np.repeat(np.arange(len(leaf_sizes)), leaf_sizes)
            for start in range(0, len(owner), chunk):
                if filled >= n:
                    break
                part = owner[start:start + chunk][: n - filled]
                block = leaf_centres[part] + self.p["noise"] * self._gauss(rng, len(part), self.noise_basis)
                out[filled:filled + len(part)] = _normalise(block)
                filled += len(part)
        return out

    def queries(self, base: np.ndarray, count: int, pool: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` queries: noisy copies of random rows among the first `pool` rows of `base`."""
        rng = np.random.default_rng(self.seed + 2)
        source = rng.choice(min(pool, len(base)), count, replace=False)
        noise = self.p["q_manifold"] * self._gauss(rng, count)
        noise += self.p["q_iso"] * rng.standard_normal((count, self.dim), dtype=np.float32) / math.sqrt(self.dim)
        sigma = self.p["q_spread"]
        noise *= rng.lognormal(-sigma ** 2 / 2, sigma, (count, 1)).astype(np.float32)
        return _normalise(base[source] + noise), source


def exact_top(base: np.ndarray, queries: np.ndarray, k: int, block: int = 100_000) -> np.ndarray:
    """Exact top-k ids by inner product (numpy float32 BLAS, blocks of `block` rows)."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(base), block):
        s = queries @ base[start:start + block].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], 1)
        best_i = np.concatenate([best_i, part + start], 1)
        keep = np.argsort(-best_s, 1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(found, truth)]))


def describe(base: np.ndarray, queries: np.ndarray | None, threads: int) -> dict[str, float]:
    """Statistics that decide how ANN structures behave (compared by --compare-real)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    n, dim = base.shape
    rng = np.random.default_rng(0)
    out: dict[str, float] = {"N": n, "|mean|": float(np.linalg.norm(base.mean(0)))}
    sample = base[rng.choice(n, min(n, 20_000), replace=False)]
    sv = np.linalg.svd(sample - sample.mean(0), compute_uv=False) ** 2
    cum = np.cumsum(sv) / sv.sum()
    for k in (10, 50, 100, 200):
        if k <= dim:
            out[f"var top{k}"] = float(cum[k - 1])
    probe = rng.choice(n, min(n, 500), replace=False)
    s = base[probe] @ base.T
    s[np.arange(len(probe)), probe] = -np.inf
    top = -np.sort(-s, 1)[:, :100]
    out["cos random"] = float(np.mean(s[np.isfinite(s)]))
    out["cos NN1 / NN10 / NN100"] = f"{top[:, 0].mean():.3f} / {top[:, 9].mean():.3f} / {top[:, 99].mean():.3f}"
    dist = np.sqrt(np.maximum(2 - 2 * top[:, :20], 1e-6))  # exact duplicates: floored
    with np.errstate(divide="ignore"):
        out["LID (MLE, 20 NN)"] = float(np.median(-1 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), 1)))
    if queries is not None:
        s = queries @ base.T
        top = -np.sort(-s, 1)[:, :100]
        truth = np.argsort(-s, 1)[:, :10]
        out["query cos random"] = float(s.mean())
        out["query cos 1st / 10th / 100th"] = f"{top[:, 0].mean():.3f} / {top[:, 9].mean():.3f} / {top[:, 99].mean():.3f}"
        nlist = max(4, int(4 * math.sqrt(n)))
        ivf = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.cp.min_points_per_centroid = 1
        ivf.train(base)
        ivf.add(base)
        for nprobe in (1, 4, 16):
            ivf.nprobe = nprobe
            out[f"recall@10 IVF{nlist} nprobe {nprobe}"] = recall_at(ivf.search(queries, 10)[1], truth)
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(base)
        for ef in (10, 16, 32):
            hnsw.hnsw.efSearch = ef
            out[f"recall@10 HNSW32 ef {ef}"] = recall_at(hnsw.search(queries, 10)[1], truth)
    return out


# -------------------------------------------------------------------------------- measurement
def rss() -> int:
    """The process's resident set size now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap() -> float:
    """Bytes the process has malloc'ed and not freed (glibc mallinfo2; NaN elsewhere). Unlike RSS, it is not
    hidden by the reuse of memory freed earlier in the run."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        return float(info.uordblks + info.hblkhd)
    except (OSError, AttributeError):
        return float("nan")


def load1() -> float:
    return os.getloadavg()[0]


@dataclass
class Row:
    name: str
    n: int
    params: str = ""
    index_bytes: float = float("nan")
    rss_bytes: float = float("nan")
    heap_bytes: float = float("nan")
    build_s: float = float("nan")
    load_s: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    samples: int = 0
    cpu_p50_ms: float = float("nan")
    cpu_p99_ms: float = float("nan")
    qps64: float = float("nan")
    recall: float = float("nan")
    load: float = field(default_factory=load1)
    note: str = ""


@dataclass
class Bench:
    args: argparse.Namespace
    queries: np.ndarray
    tmp: Path
    rows: list[Row] = field(default_factory=list)

    def single(self, search) -> list[tuple[float, float]]:
        """(wall, process CPU) seconds per single-query search: --latency-queries queries, --reps times (shuffled),
        within --time-cap. With one thread the CPU time is what the query costs on an otherwise idle core."""
        a = self.args
        qs = self.queries[: a.latency_queries]
        search(qs[:1])  # warm-up
        rng = np.random.default_rng(1)
        samples: list[tuple[float, float]] = []
        deadline = time.perf_counter() + a.time_cap
        for _ in range(a.reps):
            for i in rng.permutation(len(qs)):
                t, c = time.perf_counter(), time.process_time()
                search(qs[i:i + 1])
                samples.append((time.perf_counter() - t, time.process_time() - c))
                if time.perf_counter() > deadline and len(samples) >= a.min_samples:
                    return samples
        return samples

    def batch(self, search) -> float:
        """Queries per second on batches of 64 (median batch time; --reps passes within --time-cap)."""
        a = self.args
        batches = [self.queries[i:i + 64] for i in range(0, len(self.queries) - 63, 64)]
        times: list[float] = []
        deadline = time.perf_counter() + a.time_cap
        for _ in range(a.reps):
            for b in batches:
                t = time.perf_counter()
                search(b)
                times.append(time.perf_counter() - t)
                if time.perf_counter() > deadline and len(times) >= 3:
                    return 64 / float(np.median(times))
        return 64 / float(np.median(times))

    def stored(self, index) -> tuple[int, float]:
        """(bytes of the serialised index, seconds to faiss.read_index it back)."""
        import faiss

        path = self.tmp / "probe.index"
        faiss.write_index(index, str(path))
        size = path.stat().st_size
        t = time.perf_counter()
        again = faiss.read_index(str(path))
        seconds = time.perf_counter() - t
        del again
        path.unlink()
        return size, seconds

    def measure(self, row: Row, search, truth: np.ndarray | None, batch: bool = True, threads: int = 0) -> Row:
        import faiss

        if truth is not None:
            row.recall = recall_at(search(self.queries)[:, :10], truth)
        faiss.omp_set_num_threads(threads or self.args.threads)
        try:
            lat = np.array(self.single(search)) * 1e3
            row.p50_ms, row.p99_ms, row.samples = float(np.percentile(lat[:, 0], 50)), float(np.percentile(lat[:, 0], 99)), len(lat)
            row.cpu_p50_ms, row.cpu_p99_ms = float(np.percentile(lat[:, 1], 50)), float(np.percentile(lat[:, 1], 99))
            if batch:
                row.qps64 = self.batch(search)
        finally:
            faiss.omp_set_num_threads(self.args.threads)
        row.load = load1()
        self.rows.append(row)
        print(f"  {row.name:<30} N={row.n:>9,} {row.params:<30} p50 {row.p50_ms:8.2f} ms  p99 {row.p99_ms:8.2f} ms  "
              f"CPU p50 {row.cpu_p50_ms:7.2f} ms  "
              f"QPS@64 {row.qps64:9.1f}  recall {row.recall:.3f}  build {row.build_s:6.1f} s  {time.strftime('%H:%M:%S')} "
              f"load1 {row.load:.1f}", flush=True)
        return row


def faiss_search(index, k: int = 10):
    return lambda q: index.search(q, k)[1]


def numpy_search(x: np.ndarray, k: int = 10):
    """Exact search as one matrix product (what IndexStore does for an exact index in the working tree
    this benchmark was written against: numpy BLAS on vectors-g.npy instead of IndexFlatIP)."""
    def search(q: np.ndarray) -> np.ndarray:
        scores = q @ x.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
    return search


def built(fn):
    """(result of fn(), seconds, {"rss_bytes": RSS growth, "heap_bytes": heap growth})."""
    gc.collect()
    before, before_heap = rss(), heap()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    gc.collect()
    return out, seconds, {"rss_bytes": rss() - before, "heap_bytes": heap() - before_heap}


def auto_nlist(n: int) -> int:
    return 2 ** round(math.log2(4 * math.sqrt(n)))


def assign_ip(x: np.ndarray, centres: np.ndarray, block: int = 65_536) -> np.ndarray:
    """The centre of largest inner product for every row (numpy BLAS)."""
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), block):
        out[start:start + block] = np.argmax(x[start:start + block] @ centres.T, 1)
    return out


def kmeans_ip(train: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """Spherical k-means (what faiss trains for an inner-product IVF), Lloyd iterations in numpy BLAS."""
    rng = np.random.default_rng(seed)
    centres = train[rng.choice(len(train), k, replace=False)].copy()
    for _ in range(niter):
        a = assign_ip(train, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, a, train)
        empty = np.bincount(a, minlength=k) == 0
        sums[empty] = train[rng.choice(len(train), int(empty.sum()), replace=False)]
        centres = _normalise(sums)
    return centres


# ------------------------------------------------------------------------------------- output
def fmt(v: float, digits: int = 1) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:,.{digits}f}"


def table(rows: list[Row], exact: dict[int, Row]) -> str:
    head = ("| structure | N | params | index MB | RSS +MB | heap +MB | build s | load s | p50 ms | p99 ms | CPU ms p50 / p99 | samples "
            "| QPS (batch 64) | recall@10 | size / exact | p99 / exact | QPS / exact | load1 |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        e = exact.get(r.n)

        def ratio(a: float, b: float | None) -> str:
            return fmt(a / b, 2) if b and not math.isnan(a) and not math.isnan(b) else "-"

        lines.append(
            f"| {r.name}{' ' + r.note if r.note else ''} | {r.n:,} | {r.params} | {fmt(r.index_bytes / 2**20)} "
            f"| {fmt(r.rss_bytes / 2**20)} | {fmt(r.heap_bytes / 2**20)} | {fmt(r.build_s)} | {fmt(r.load_s, 2)} "
            f"| {fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} | {fmt(r.cpu_p50_ms, 2)} / {fmt(r.cpu_p99_ms, 2)} | {r.samples or '-'} "
            f"| {fmt(r.qps64)} | {fmt(r.recall, 3)} "
            f"| {ratio(r.index_bytes, e.index_bytes if e else None)} | {ratio(r.p99_ms, e.p99_ms if e else None)} "
            f"| {ratio(r.qps64, e.qps64 if e else None)} | {fmt(r.load)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 250_000, 1_000_000], help="index sizes (prefixes of one corpus)")
    ap.add_argument("--dim", type=int, default=384, help="vector width (all-MiniLM-L6-v2: 384)")
    ap.add_argument("--queries", type=int, default=500, help="queries for recall@10 (the timed ones are drawn from them)")
    ap.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time, per repetition")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every timed loop")
    ap.add_argument("--time-cap", type=float, default=20.0, help="seconds at most per timed loop (once it has --min-samples)")
    ap.add_argument("--min-samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="faiss.omp_set_num_threads")
    ap.add_argument("--hnsw-sizes", type=int, nargs="*", default=None,
                    help="sizes at which HNSW is built (default: those <= 250,000; larger ones are extrapolated)")
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256], help="HNSW efSearch values")
    ap.add_argument("--ef-construction", type=int, default=40, help="HNSW efConstruction (40: FAISS's default, what build_faiss uses)")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 4*sqrt(N) rounded to a power of 2)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--train-per-list", type=int, default=16, help="IVF k-means training points per list")
    ap.add_argument("--pq-bytes", type=int, default=48, help="IVF-PQ code bytes per vector (a divisor of --dim)")
    ap.add_argument("--rerank", type=int, default=10, help="IVF-PQ re-rank: candidates = rerank * 10, scored on the float vectors")
    ap.add_argument("--target-ms", type=float, default=50.0, help="the single-query p99 a user should feel at most")
    ap.add_argument("--compare-real", nargs="+", metavar="NPY", help="VECTORS.npy [QUERIES.npy]: print real vs synthetic statistics")
    ap.add_argument("--exact-hnsw-only", action="store_true",
                    help="measure only exact and HNSW (e.g. to build HNSW once at 1M: --sizes 1000000 --hnsw-sizes 1000000)")
    ap.add_argument("--milvus-sizes", type=int, nargs="*", default=[],
                    help="sizes at which the vectors also go into Milvus Lite (`codebert index --store milvus`: HNSW M 32, "
                         "efConstruction 128), measured as the rest: indexing rate, latency, QPS, recall@10 against exact")
    ap.add_argument("--milvus-ef", type=int, nargs="+", default=[128, 256], help="Milvus HNSW ef at search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a ~1-minute smoke run (small sizes, few queries, short timing)")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.queries, args.latency_queries, args.reps, args.time_cap, args.min_samples = [20_000, 50_000], 100, 50, 2, 2.0, 20
        args.nprobe, args.ef = [8, 32], [64, 128]
    args.sizes = sorted(set(args.sizes))
    if args.hnsw_sizes is None:
        args.hnsw_sizes = [n for n in args.sizes if n <= 250_000]
    if args.queries < 64 or args.dim % args.pq_bytes:
        ap.error("--queries must be >= 64 (one batch) and --pq-bytes must divide --dim")
    return args


def compare_real(args: argparse.Namespace) -> None:
    real = np.load(args.compare_real[0]).astype(np.float32)
    real_q = np.load(args.compare_real[1]).astype(np.float32) if len(args.compare_real) > 1 else None
    corpus = Corpus(real.shape[1], args.seed)
    synth = corpus.vectors(len(real))
    synth_q = corpus.queries(synth, len(real_q) if real_q is not None else 400, len(synth))[0]
    a, b = describe(real, real_q, args.threads), describe(synth, synth_q, args.threads)
    print(f"\n## Real vs synthetic vectors at N = {len(real):,}\n\nreal: {args.compare_real[0]}"
          f"{', queries ' + args.compare_real[1] if real_q is not None else ' (no real queries given)'}\n")
    print("| statistic | real | synthetic |\n|---|---|---|")
    for key in b:
        fa = a.get(key, "-")
        print(f"| {key} | {fa if isinstance(fa, str) else fmt(fa, 3)} | {b[key] if isinstance(b[key], str) else fmt(b[key], 3)} |")
    sys.stdout.flush()


def main() -> None:
    args = parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    started, load_start = time.perf_counter(), os.getloadavg()
    print(f"# scale_index.py  {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}, {cpu_name()}, "
          f"{os.cpu_count()} CPUs, faiss threads {args.threads}")
    print(f"sizes {args.sizes}, dim {args.dim}, queries {args.queries} (timed one at a time: {args.latency_queries} x {args.reps} reps, "
          f"<= {args.time_cap:.0f} s per loop once {args.min_samples} samples), HNSW built at {args.hnsw_sizes}")
    print(f"load average at start (1 / 5 / 15 min): {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}", flush=True)
    if args.compare_real:
        compare_real(args)

    big = args.sizes[-1]
    corpus = Corpus(args.dim, args.seed)
    t = time.perf_counter()
    base = corpus.vectors(big)
    queries, source = corpus.queries(base, args.queries, args.sizes[0])
    print(f"\nvectors: {big:,} x {args.dim} in {time.perf_counter() - t:.1f} s; queries: mean cos(query, its source) "
          f"{float(np.mean(np.sum(queries * base[source], 1))):.3f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="scale_index-"))
    bench = Bench(args, queries, tmp)
    exact: dict[int, Row] = {}
    hnsw, hnsw_n, hnsw_build, hnsw_mem = None, 0, 0.0, {"rss_bytes": 0.0, "heap_bytes": 0.0}
    threads_rows: list[str] = []
    threads_at = max([m for m in args.sizes if m <= 250_000] or [args.sizes[0]])
    try:
        for n in args.sizes:
            print(f"\n## N = {n:,}", flush=True)
            x = base[:n]
            t = time.perf_counter()
            truth = exact_top(x, queries, 10)
            print(f"  ground truth (numpy, {args.queries} queries) {time.perf_counter() - t:.1f} s", flush=True)

            flat, secs, mem = built(lambda: _flat(x))
            size, load_s = bench.stored(flat)
            row = bench.measure(Row("exact IndexFlatIP", n, f"{args.threads} threads", size, build_s=secs, load_s=load_s, **mem),
                                faiss_search(flat), truth if n == args.sizes[0] else None)
            if math.isnan(row.recall):
                row.recall = 1.0  # by definition (checked against numpy at the smallest size)
            exact[n] = row
            if args.threads != 1:
                r1 = bench.measure(Row("exact IndexFlatIP", n, "1 thread", size, build_s=secs, load_s=load_s, **mem),
                                   faiss_search(flat), None, batch=False, threads=1)
                r1.recall = 1.0
            from threadpoolctl import threadpool_limits

            for threads in dict.fromkeys((args.threads, 1)):
                with threadpool_limits(limits=threads, user_api="blas"):
                    r = bench.measure(Row("exact numpy", n, f"{threads} thread{'s' if threads > 1 else ''}", 4 * args.dim * n,
                                          build_s=float("nan"), load_s=float("nan")), numpy_search(x), None, batch=threads == args.threads)
                r.recall = 1.0
            if n == threads_at and not args.exact_hnsw_only:
                threads_rows = threads_check(flat, queries, args)
            if n == big and not args.exact_hnsw_only:
                _others(bench, x, truth, n)
            del flat
            gc.collect()

            if n in args.milvus_sizes:
                _milvus(bench, x, truth, n)
            if n in args.hnsw_sizes:
                if hnsw is None:
                    hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
                    hnsw.hnsw.efConstruction = args.ef_construction
                _, secs, mem = built(lambda: hnsw.add(x[hnsw_n:]))
                hnsw_build, hnsw_n = hnsw_build + secs, n
                hnsw_mem = {k: hnsw_mem[k] + mem[k] for k in mem}
                size, load_s = bench.stored(hnsw)
                for ef in args.ef:
                    hnsw.hnsw.efSearch = ef
                    bench.measure(Row("HNSW32", n, hnsw_params(ef, args), size, build_s=hnsw_build, load_s=load_s, **hnsw_mem),
                                  faiss_search(hnsw), truth)
        hnsw = None  # free it (not del: the lambdas above refer to the name)
        gc.collect()
        extrapolated = extrapolate(bench.rows, args)
        idmap = idmap_overhead(big)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load_end = os.getloadavg()
    print("\n# Results\n")
    print(f"faiss threads {args.threads} (rows marked '1 thread': 1); load average at start {load_start[0]:.2f} / {load_start[1]:.2f} / "
          f"{load_start[2]:.2f}, at end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1 / 5 / 15 min); "
          f"ratios against the exact {args.threads}-thread row of the same N\n")
    print(f"## Every structure at N = {big:,}\n")
    print(table([r for r in bench.rows if r.n == big] + [r for r in extrapolated if r.n == big], exact))
    print("\n## Exact vs HNSW by size\n")
    scaling = [r for r in bench.rows + extrapolated if r.name.startswith(("exact", "HNSW"))]
    print(table(sorted(scaling, key=lambda r: (r.n, not r.name.startswith("exact"), r.params)), exact))
    print(f"\n## Switch point (target: single-query p99 < {args.target_ms:.0f} ms)\n")
    labels = (f"{args.threads} threads", "1 thread")
    for name, label in [(name, label) for name in ("exact IndexFlatIP", "exact numpy") for label in labels]:
        rows = [r for r in bench.rows if r.name == name and r.params == label]
        for r in rows:
            print(f"- {name} ({label}) at N = {r.n:,}: p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms -> "
                  f"{'meets' if r.p99_ms < args.target_ms else 'misses'} the target")
        if len(rows) >= 2:
            ns = np.array([r.n for r in rows], dtype=np.float64)
            cols = ("p50_ms", "p99_ms") + (("cpu_p50_ms", "cpu_p99_ms") if label == "1 thread" else ())
            for col in cols:
                slope, icept = np.polyfit(ns, np.array([getattr(r, col) for r in rows]), 1)
                cross = (args.target_ms - icept) / slope if slope > 0 else float("inf")
                what = col[:-3].replace("_", " ") + (" (~ the latency on an otherwise idle core)" if col.startswith("cpu") else "")
                print(f"  - {what} fitted (least squares, linear in N): {icept:.1f} ms + {slope * 1e6:.1f} ms per million vectors "
                      f"-> {args.target_ms:.0f} ms at N ~ {cross:,.0f}")
    if threads_rows:
        print("\n## Exact single-query latency vs faiss threads (interleaved A/B)\n")
        print("\n".join(threads_rows))
    print(f"\n## IndexIDMap2 (the wrapper build_faiss puts around every index) at N = {big:,}\n")
    print(idmap)
    print(f"\nwall time {time.perf_counter() - started:.0f} s", flush=True)


def _milvus(bench: Bench, x: np.ndarray, truth: np.ndarray, n: int) -> None:
    """Milvus Lite at size n, as `codebert index --store milvus` fills it (codebert.tool.milvus_store):
    one collection, HNSW (M 32, efConstruction 128) by inner product, inserted in batches of 5,000."""
    from pymilvus import DataType, MilvusClient

    from codebert.tool import milvus_store

    folder = bench.tmp / f"milvus-{n}"
    folder.mkdir()
    client = MilvusClient(str(folder / "milvus.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=x.shape[1])
    params = client.prepare_index_params()
    params.add_index("vector", index_type="HNSW", metric_type="IP", params=milvus_store.HNSW)

    def build():
        client.create_collection("bench", schema=schema, index_params=params)
        for start in range(0, n, milvus_store.INSERT_BATCH):
            stop = min(start + milvus_store.INSERT_BATCH, n)
            client.insert("bench", [{"id": i, "vector": x[i].tolist()} for i in range(start, stop)])
        client.flush("bench")
        client.load_collection("bench")

    _, secs, mem = built(build)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"  Milvus Lite: {n:,} vectors inserted, indexed and loaded in {secs:.1f} s ({n / secs:,.0f} vectors/s)", flush=True)
    for ef in bench.args.milvus_ef:
        def search(q: np.ndarray, ef: int = ef) -> np.ndarray:
            found = client.search("bench", data=q.tolist(), limit=10, search_params={"metric_type": "IP", "params": {"ef": ef}})
            return np.array([[hit["id"] for hit in row] + [-1] * (10 - len(row)) for row in found])

        bench.measure(Row("Milvus Lite HNSW32", n, f"ef {ef}, efC 128", size, build_s=secs, **mem,
                          note=f"{n / secs:,.0f} vectors/s indexed"), search, truth)
    client.drop_collection("bench")
    client.close()


def _flat(x: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def _others(bench: Bench, x: np.ndarray, truth: np.ndarray, n: int) -> None:
    """SQ8, IVF-Flat, IVF-PQ (+ re-rank) at size n."""
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    args, dim = bench.args, x.shape[1]

    def sq8():
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        index.train(x[np.random.default_rng(3).choice(n, min(n, 100_000), replace=False)])
        index.add(x)
        return index

    index, secs, mem = built(sq8)
    size, load_s = bench.stored(index)
    bench.measure(Row("SQ8 flat", n, "8 bits/dim", size, build_s=secs, load_s=load_s, **mem), faiss_search(index), truth)
    del index
    gc.collect()

    nlist = args.nlist or auto_nlist(n)
    train = x[np.random.default_rng(4).choice(n, min(n, args.train_per_list * nlist), replace=False)]
    t = time.perf_counter()
    centres = kmeans_ip(train, nlist, 10, args.seed)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    assign = assign_ip(x, centres)
    assign_s = time.perf_counter() - t
    coarse_s = train_s + assign_s
    print(f"  IVF coarse quantizer: {nlist} lists, spherical k-means (10 iterations, numpy BLAS) on {len(train):,} points "
          f"{train_s:.1f} s + assigning {n:,} vectors {assign_s:.1f} s; counted in every IVF build time", flush=True)

    def quantizer():
        q = faiss.IndexFlatIP(dim)
        q.add(centres)
        return q

    def ivf_flat():
        index = faiss.IndexIVFFlat(quantizer(), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        add_preassigned(index, x, assign)
        return index

    index, secs, mem = built(ivf_flat)
    size, load_s = bench.stored(index)
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        bench.measure(Row("IVF-Flat", n, f"nlist {nlist}, nprobe {nprobe}", size, build_s=coarse_s + secs, load_s=load_s, **mem),
                      faiss_search(index), truth)
    del index
    gc.collect()

    m = args.pq_bytes
    pq_train = train[: min(len(train), 32_768)]

    def ivf_pq():
        index = faiss.IndexIVFPQ(quantizer(), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(pq_train)  # the quantizer is trained: this trains the PQ on residuals only
        add_preassigned(index, x, assign)
        return index

    index, secs, mem = built(ivf_pq)
    size, load_s = bench.stored(index)
    vectors_npy = bench.tmp / "vectors.npy"
    np.save(vectors_npy, x)
    mm = np.load(vectors_npy, mmap_mode="r")
    k_cand = args.rerank * 10

    def reranked(nprobe):
        def search(q):
            index.nprobe = nprobe
            cand = index.search(q, k_cand)[1]
            vecs = mm[np.maximum(cand, 0).ravel()].reshape(len(q), k_cand, dim)
            scores = np.einsum("qkd,qd->qk", vecs, q)
            scores[cand < 0] = -np.inf
            return np.take_along_axis(cand, np.argsort(-scores, 1)[:, :10], 1)
        return search

    probes = [p for p in args.nprobe if p >= 16] or args.nprobe[-1:]
    for nprobe in probes:
        index.nprobe = nprobe
        bench.measure(Row("IVF-PQ", n, f"PQ{m}, nlist {nlist}, nprobe {nprobe}", size, build_s=coarse_s + secs, load_s=load_s, **mem),
                      faiss_search(index), truth)
    for nprobe in probes:
        bench.measure(Row("IVF-PQ + re-rank", n, f"PQ{m}, nprobe {nprobe}, top {k_cand}", size, build_s=coarse_s + secs, load_s=load_s,
                          note="(+ vectors.npy, mmap)", **mem), reranked(nprobe), truth)
    index = mm = None  # free them (not del: the closures above refer to the names)
    vectors_npy.unlink()
    gc.collect()


def threads_check(flat, queries: np.ndarray, args: argparse.Namespace) -> list[str]:
    """Exact single-query latency with 1 and 2 faiss threads, interleaved (3 rounds of 30 queries each)."""
    import faiss

    lat: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    qs = queries[:30]
    for _ in range(3):
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            for i in range(len(qs)):
                t, c = time.perf_counter(), time.process_time()
                flat.search(qs[i:i + 1], 10)
                lat[threads].append(time.perf_counter() - t)
                cpu[threads].append(time.process_time() - c)
    faiss.omp_set_num_threads(args.threads)
    rows = [f"N = {flat.ntotal:,}; 3 interleaved rounds of 30 queries per setting; load1 {load1():.1f}\n",
            "| faiss threads | p50 ms | p99 ms | process CPU ms per query (p50) |", "|---|---|---|---|"]
    for threads in (1, 2):
        a = np.array(lat[threads]) * 1e3
        rows.append(f"| {threads} | {np.percentile(a, 50):.2f} | {np.percentile(a, 99):.2f} | {np.median(cpu[threads]) * 1e3:.2f} |")
    return rows


def hnsw_params(ef: int, args: argparse.Namespace) -> str:
    return f"efSearch {ef}" + (f", efConstruction {args.ef_construction}" if args.ef_construction != 40 else "")


def extrapolate(rows: list[Row], args: argparse.Namespace) -> list[Row]:
    """HNSW at the sizes it was not built at (marked as extrapolated), from the largest built size: bytes, memory
    and load time linear in N; build time N log N; latency (and 1 / QPS) proportional to log N (a search visits
    ~log N layers' worth of nodes at a fixed efSearch); recall linear in log N through the two largest built sizes."""
    out: list[Row] = []
    built_at = sorted({r.n for r in rows if r.name == "HNSW32"})
    if len(built_at) < 2:
        return out
    n1, n2 = built_at[-2], built_at[-1]
    for n in [m for m in args.sizes if m > n2]:
        for ef in args.ef:
            a = next(r for r in rows if r.name == "HNSW32" and r.n == n1 and r.params == hnsw_params(ef, args))
            b = next(r for r in rows if r.name == "HNSW32" and r.n == n2 and r.params == hnsw_params(ef, args))
            f = math.log(n / n2) / math.log(n2 / n1)

            def lin(u: float, v: float) -> float:
                return v + (v - u) * f

            g = math.log(n) / math.log(n2)
            out.append(Row("HNSW32", n, hnsw_params(ef, args), b.index_bytes * n / n2, b.rss_bytes * n / n2, b.heap_bytes * n / n2,
                           b.build_s * (n / n2) * g, b.load_s * n / n2, b.p50_ms * g, b.p99_ms * g, 0, b.cpu_p50_ms * g,
                           b.cpu_p99_ms * g, b.qps64 / g, min(1.0, lin(a.recall, b.recall)), float("nan"), note="(extrapolated)"))
    return out


IDMAP_PROBE = """
import os, sys, numpy as np, faiss
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
n = int(sys.argv[1]); ids = np.arange(n, dtype=np.int64) * 7 + 1; ones = np.ones((n, 1), np.float32)
plain, wrapped = faiss.IndexFlatIP(1), faiss.IndexIDMap2(faiss.IndexFlatIP(1))
r0 = rss(); plain.add(ones); r1 = rss(); wrapped.add_with_ids(ones, ids); r2 = rss()
print((r2 - r1) - (r1 - r0), faiss.serialize_index(wrapped).nbytes - faiss.serialize_index(plain).nbytes)
"""


def idmap_overhead(n: int) -> str:
    """What IndexIDMap2 adds per vector, measured in a fresh process around a 1-dimensional flat index."""
    out = subprocess.run([sys.executable, "-c", IDMAP_PROBE, str(n)], capture_output=True, text=True, check=True).stdout.split()
    grown, size = int(out[0]), int(out[1])
    return (f"in the file: {size / n:.1f} bytes per vector ({size / 2**20:.1f} MB); in memory (id_map + the reverse hash map, which "
            f"IndexIDMap2 also rebuilds on load): {grown / n:.1f} bytes per vector ({grown / 2**20:.1f} MB RSS)")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
