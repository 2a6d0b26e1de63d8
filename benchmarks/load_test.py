"""Loopback load test of `codebert serve`: N search requests from C concurrent clients.

Starts the server on a free loopback port in this process (uvicorn in a thread), then C client
threads (httpx) send N requests in all, each a query drawn from a fixed list, and reports errors
(any non-200 answer or exception), throughput and latency percentiles as the clients saw them.

    python benchmarks/load_test.py INDEX [--requests 1000] [--clients 16]
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from codebert.report import format_table
from codebert.serve import create_app

QUERIES = [
    "parse a date string", "read a configuration file", "sort a list of numbers", "open a network connection",
    "compute a checksum", "format a number as currency", "split a path into parts", "merge two dictionaries",
    "retry a request after a failure", "convert bytes to a string", "find the maximum value", "escape html",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(args.index), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    def one(i: int) -> tuple[float, bool]:
        start = time.perf_counter()
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                ok = client.get("/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": args.k}).status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - start, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        outcomes = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - started
    server.should_exit = True
    latencies = np.array([t for t, _ in outcomes]) * 1000
    errors = sum(not ok for _, ok in outcomes)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    rows = [["requests", args.requests], ["concurrent clients", args.clients], ["errors", errors],
            ["requests/s", args.requests / wall], ["latency p50, ms", p50], ["latency p90, ms", p90],
            ["latency p99, ms", p99], ["latency max, ms", latencies.max()]]
    print(format_table(["figure", "value"], rows))


if __name__ == "__main__":
    main()
