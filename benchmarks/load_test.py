"""Loopback load test of `codebert serve`: this version against a baseline version, same index, same run.

Each server runs as its own process (`codebert serve`, or the whole package as it was at --baseline
REV, checked out as a detached git worktree and run on its own PYTHONPATH), on a free loopback port. Client coroutines
(asyncio streams, one keep-alive HTTP/1.1 connection each) keep C requests in flight for R rounds of N requests,
each a distinct query (the first line of csn6 test docs, so no answer can come from a cache), and
reports per round: errors (any non-200 answer or exception), requests/s, latency p50/p99 as the
clients saw them, and the server's resident memory after the round (flat across rounds = no leak).

The index: any `codebert index` folder (INDEX), or with --synthetic a 100,000-function index made
from csn6 in `codebert index`'s layout (real functions, paths and languages in SQLite, their real
vectors from the bi-encoder --model, a long function cut to one window rather than averaged over
several): about 8 minutes to build on 2 cores instead of 25.

    python benchmarks/load_test.py --synthetic runs/bench/csn6-100k --model runs/qs-csn6/search/best \
        [--data ../shared/data/csn6] [--requests 2000] [--clients 16] [--rounds 3] [--baseline HEAD]
    python benchmarks/load_test.py --index INDEX ...
    python benchmarks/load_test.py --synthetic ... --rankings dense hybrid   # the cost of hybrid ranking, same run

Target (issue 16): >= 200 requests/s, p99 <= 250 ms, 0 errors, memory flat, 16 clients, 2 cores.
"""

from __future__ import annotations

import argparse
import atexit
import asyncio
import gzip
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

from codebert.tables import format_table

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- the index
def synthetic_index(out: Path, data: Path, model: str, functions: int, seed: int = 0) -> Path:
    """An index folder in `codebert index`'s layout: csn6 functions, random unit vectors."""
    from codebert.search import lexical
    from codebert.tool.embed import TextEncoder
    from codebert.tool.index import model_ranking
    from codebert.tool.store import MANIFEST, SCHEMA, build_faiss, group_by_language

    if (out / MANIFEST).is_file():
        add_lexical(out)  # an index built before the lexical index
        return out
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for language in sorted(p.name for p in data.iterdir() if p.is_dir()):
        for split in ("train", "valid", "test"):
            with gzip.open(data / language / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
                records += [dict(json.loads(line), language=language) for line in f]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=min(functions, len(records)), replace=False)
    db = sqlite3.connect(out / "meta-1.sqlite")
    db.executescript(SCHEMA)
    ids = []
    for n, i in enumerate(chosen):
        r = records[i]
        path = f"/csn6/{r['language']}/{r.get('repo', 'repo')}/{r.get('path', 'file')}#{n}"
        file_id = db.execute("INSERT INTO files(path, root, language, sha256) VALUES (?, '/csn6', ?, '')", (path, r["language"])).lastrowid
        ids.append(db.execute("INSERT INTO functions(file_id, name, language, start_line, end_line, text, tokens) VALUES (?, ?, ?, 1, ?, ?, ?)",
                              (file_id, r.get("func_name", "f"), r["language"], r["code"].count("\n") + 1, r["code"],
                               " ".join(r.get("code_tokens", [])))).lastrowid)
    lexical.create(db)  # as `codebert index` fills it: name, doc, code tokens
    lexical.add(db, [(f, f"{records[i].get('func_name', 'f')} {records[i]['docstring']} {' '.join(records[i].get('code_tokens', []))}")
                     for f, i in zip(ids, chosen)])
    db.commit()
    db.close()
    # Real vectors of the real functions, as `codebert index` encodes them (doc + code tokens, bf16
    # where the CPU has it), except that a long function is cut to its first window instead of
    # averaged over windows: ~3x faster to build, and the server's work per query is the same.
    encoder = TextEncoder(model, precision="auto")
    texts = [f"{records[i]['docstring']} {' '.join(records[i].get('code_tokens', []))}".strip() for i in chosen]
    vectors = encoder.encode_code(texts, progress=True, split_long=False)
    ids = np.array(ids, dtype=np.int64)
    languages = [records[i]["language"] for i in chosen]
    vectors, ids, language_rows = group_by_language(vectors, ids, {int(f): lang for f, lang in zip(ids, languages)})
    import faiss

    faiss.write_index(build_faiss(vectors, ids, 250_000), str(out / "faiss-1.index"))
    np.save(out / "vectors-1.npy", vectors)
    np.save(out / "ids-1.npy", ids)
    model_id = str(Path(model).resolve()) if Path(model).exists() else model
    encoder.export_query_encoder(out / "query-encoder", model_id)
    manifest = {"generation": 1, "model": model_id, "dimension": encoder.dimension, "functions": len(ids), "search": "exact",
                "include_docs": True, "language_rows": language_rows, "roots": ["/csn6"], "ranking": model_ranking(model).as_dict(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def add_lexical(out: Path) -> None:
    """The lexical index of a synthetic index made before it existed, or before its words were stems,
    as `codebert index` gives an old index one."""
    from codebert.tool.index import upgrade_lexical

    db = sqlite3.connect(out / "meta-1.sqlite")
    upgrade_lexical(db, out)
    db.commit()
    db.close()


def queries(data: Path, count: int) -> list[str]:
    """Distinct first lines of csn6 test docs: what people type, and never the same twice."""
    seen: dict[str, None] = {}
    for language in sorted(p.name for p in data.iterdir() if p.is_dir()):
        with gzip.open(data / language / "test.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                doc = " ".join(json.loads(line)["docstring"].split("\n")[0].split())[:200]
                if len(doc) > 10:
                    seen.setdefault(doc)
    texts = list(seen)
    np.random.default_rng(0).shuffle(texts)
    if len(texts) < count:
        raise SystemExit(f"only {len(texts)} distinct queries in {data}; ask for fewer requests")
    return texts[:count]


# ------------------------------------------------------------------------------- servers
def start_server(index: Path, baseline: str | None, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if baseline is None:
        command = [str(Path(sys.executable).parent / "codebert"), "serve", str(index), "--port", str(port), "--threads", str(threads)]
    else:
        # The baseline is the whole package as it was at that revision (a detached git worktree
        # on its own PYTHONPATH), so that modules moved or renamed since do not matter. Its
        # serve.py is started as that revision started it (create_app + uvicorn).
        folder = Path(tempfile.mkdtemp(prefix="codebert-baseline-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), baseline], capture_output=True,
                       text=True, check=True)
        atexit.register(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], capture_output=True)
        env = dict(os.environ, PYTHONPATH=str(folder / "src"))
        module = next(m for m in ("codebert.tool.serve", "codebert.serve") if (folder / "src" / (m.replace(".", "/") + ".py")).is_file())
        program = (f"import uvicorn; from {module} import create_app; from pathlib import Path; "
                   f"uvicorn.run(create_app(Path({str(index)!r}), {threads}), host='127.0.0.1', port={port}, log_level='warning')")
        command = [sys.executable, "-c", program]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env if baseline is not None else None)
    base = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(1200):
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not start in 120 s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _client(host: str, port: int, pending, k: int, latencies: list[float], failures: list[int], ranking: str | None = None) -> None:
    """One client: HTTP/1.1 GETs on one keep-alive connection, read by Content-Length.

    Written on asyncio streams rather than httpx: the clients share the server's two cores, and
    httpx spends about as much CPU per request as the server's whole HTTP stack does, which would
    be measured as the server's slowness (a real user's browser runs on another machine)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for text in pending:
            params = {"q": text, "k": k, **({"ranking": ranking} if ranking else {})}
            request = f"GET /api/search?{urlencode(params)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            start = time.perf_counter()
            try:
                writer.write(request)
                status = (await reader.readline()).split(b" ", 2)
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                failures[0] += len(status) < 2 or status[1] != b"200"
            except (OSError, asyncio.IncompleteReadError, ValueError):
                failures[0] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def round_of(base: str, texts: list[str], clients: int, k: int, ranking: str | None = None) -> tuple[float, np.ndarray, int]:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    failures = [0]
    pending = iter(texts)
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, int(port), pending, k, latencies, failures, ranking) for _ in range(clients)))
    wall = time.perf_counter() - started
    return wall, np.array(latencies) * 1000, failures[0]


def measure(name: str, server: subprocess.Popen, base: str, texts: list[str], args, ranking: str | None = None) -> list[list]:
    import httpx

    extra = {"ranking": ranking} if ranking else {}
    for text in texts[:20]:  # warm-up: first requests load lazily (lexers, FAISS pages)
        httpx.get(base + "/api/search", params={"q": text, "k": args.k, **extra}, timeout=60)
    rows = []
    per_round = len(texts) // args.rounds
    for r in range(args.rounds):
        chunk = texts[r * per_round : (r + 1) * per_round]
        wall, latencies, errors = asyncio.run(round_of(base, chunk, args.clients, args.k, ranking))
        p50, p99 = np.percentile(latencies, [50, 99])
        rows.append([name, r + 1, len(chunk), errors, f"{len(chunk) / wall:.1f}", f"{p50:.0f}", f"{p99:.0f}",
                     f"{rss_mb(server.pid):.0f}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", type=Path, help="an index folder from `codebert index`")
    where.add_argument("--synthetic", type=Path, help="build (once) or reuse a synthetic csn6 index here")
    parser.add_argument("--model", help="bi-encoder folder for --synthetic")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/csn6")
    parser.add_argument("--functions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per server, over all rounds")
    parser.add_argument("--baseline-requests", type=int, default=300, help="requests for the baseline (slow: fewer)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch/ONNX Runtime threads in the server (0: default)")
    parser.add_argument("--baseline", default=None, help="git revision whose serve.py is the baseline (e.g. HEAD~5); none: skip")
    parser.add_argument("--rankings", nargs="+", default=[], choices=["dense", "lexical", "hybrid", "auto"],
                        help="measure this version once per ranking asked for (the first is the baseline of the ratio); none: the index's own")
    args = parser.parse_args()

    index = args.index
    if args.synthetic is not None:
        if not args.model:
            raise SystemExit("--synthetic needs --model")
        t0 = time.perf_counter()
        index = synthetic_index(args.synthetic, args.data, args.model, args.functions)
        print(f"index: {index} ({time.perf_counter() - t0:.0f} s to build or find)", flush=True)
    start = args.requests * max(1, len(args.rankings))  # the baseline's queries come after this version's
    texts = queries(args.data, start + args.baseline_requests + 40)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    runs = [("this version", None, texts[: args.requests], None)]
    if args.rankings:
        runs = [(f"this version, {r}", None, texts[n * args.requests : (n + 1) * args.requests], r) for n, r in enumerate(args.rankings)]
    if args.baseline:  # asked for the last of --rankings (if any), so that the ratio compares like with like
        last = args.rankings[-1] if args.rankings else None
        runs.append((f"baseline {args.baseline}" + (f", {last}" if last else ""), args.baseline,
                     texts[start : start + args.baseline_requests], last))
    for name, revision, chunk, ranking in runs:
        server, base = start_server(index, revision, args.threads)
        try:
            rows += measure(name, server, base, chunk, args, ranking)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print()
    print(format_table(["server", "round", "requests", "errors", "requests/s", "p50 ms", "p99 ms", "server RSS MB"], rows))
    if args.baseline:
        last = args.rankings[-1] if args.rankings else None
        mine = [float(r[4]) for r in rows if r[0] == "this version" + (f", {last}" if last else "")]
        theirs = [float(r[4]) for r in rows if r[0].startswith("baseline")]
        print(f"\nthroughput, this version / baseline{f' ({last})' if last else ''}: {np.mean(mine) / np.mean(theirs):.1f}x")
    if len(args.rankings) > 1:
        rate = {r: np.mean([float(row[4]) for row in rows if row[0] == f"this version, {r}"]) for r in args.rankings}
        print("\n" + "; ".join(f"throughput {r} / {args.rankings[0]}: {rate[r] / rate[args.rankings[0]]:.2f}x" for r in args.rankings[1:]))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
