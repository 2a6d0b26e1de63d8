"""The HTTP API and the page: search, detail, stats, bad inputs, the indexed-roots boundary."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import pytest

from codebert.errors import UserError
from codebert.tool import index as index_mod
from codebert.config import load_config
from codebert.tool.store import read_manifest
from conftest import SAMPLES


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    from fastapi.testclient import TestClient

    from codebert.tool.serve import create_app

    root = tmp_path_factory.mktemp("tree") / "samples"
    shutil.copytree(SAMPLES, root)
    out = tmp_path_factory.mktemp("index") / "idx"
    index_mod.main(load_config(index_mod.IndexConfig, None, {"paths": [str(root)], "model": str(tiny_model_dir),
                                                             "out": str(out), "progress": "false", "threads": "1"}))
    return TestClient(create_app(out, threads=1)), out, root


def test_search_returns_ranked_results_with_snippets(served):
    client, _, root = served
    body = client.get("/api/search", params={"q": "parse a memory string", "k": 5}).json()
    assert len(body["results"]) == 5 and body["terms"] == ["memory", "string", "parse"]
    first = body["results"][0]
    assert first["path"].startswith(str(root)) and first["start_line"] >= 1 and first["snippet"]
    assert "snippet_html" not in first  # highlighting is the page's, unless asked for
    asked = client.get("/api/search", params={"q": "parse a memory string", "k": 5, "html": "true"}).json()["results"][0]
    assert "<pre" in asked["snippet_html"] and asked["id"] == first["id"]
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    go = client.get("/api/search", params={"q": "stack", "k": 3, "language": "go"}).json()["results"]
    assert go and {r["language"] for r in go} == {"go"}


def test_each_ranking_answers_as_the_command_line_does(served):
    from codebert.config import load_config
    from codebert.tool.query import QueryConfig, query_main

    client, index, _ = served
    for ranking in ("dense", "lexical", "hybrid"):
        body = client.get("/api/search", params={"q": "parse a memory string", "k": 5, "ranking": ranking}).json()
        shell = query_main(load_config(QueryConfig, None, {"index": str(index), "text": "parse a memory string", "k": "5",
                                                           "ranking": ranking, "engine": "torch", "threads": "1"}))
        assert [r["id"] for r in body["results"]] == [r["id"] for r in shell["results"]], ranking
        if ranking != "dense":
            assert all("lexical_score" in r for r in body["results"])
        filtered = client.get("/api/search", params={"q": "parse a memory string", "k": 5, "ranking": ranking,
                                                     "path": ["**/*.py", "**/*.go"], "exclude": "**/memory.py"}).json()["results"]
        shell = query_main(load_config(QueryConfig, None, {"index": str(index), "text": "parse a memory string", "k": "5", "ranking": ranking,
                                                           "engine": "torch", "threads": "1", "path": ["**/*.py", "**/*.go"],
                                                           "exclude": ["**/memory.py"]}))
        assert [r["id"] for r in filtered] == [r["id"] for r in shell["results"]]
        assert filtered and all(r["path"].endswith((".py", ".go")) and not r["path"].endswith("memory.py") for r in filtered)
        assert all(r["location"] == f"{r['path']}:{r['start_line']}-{r['end_line']}" for r in filtered)


def test_function_detail_health_stats_and_openapi(served):
    client, _, _ = served
    hit = client.get("/api/search", params={"q": "memory", "k": 1}).json()["results"][0]
    detail = client.get(f"/api/functions/{hit['id']}", params={"q": "memory"}).json()
    assert detail["name"] == hit["name"] and detail["text"]
    if "memory" in detail["text"].lower():
        assert "<mark>" in detail["html"]
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/api/stats").json()["functions"] > 20
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/functions/{function_id}", "/api/stats", "/api/health"} <= set(spec["paths"])
    docs = client.get("/docs")  # offline: no script from a CDN, the endpoints described on the page
    assert docs.status_code == 200 and "/api/search" in docs.text and "cdn" not in docs.text.lower() and "<script" not in docs.text
    page = client.get("/")
    assert page.status_code == 200 and "search-form" in page.text


@pytest.mark.parametrize("params, status, words", [
    ({"q": ""}, 400, "empty"),
    ({"q": "   "}, 400, "empty"),
    ({"q": "x" * 1001}, 413, "longer"),
    ({"q": "sort", "k": 0}, 400, "k"),
    ({"q": "sort", "k": -3}, 400, "k"),
    ({"q": "sort", "k": 100000}, 400, "k"),
    ({"q": "sort", "k": "ten"}, 422, "k"),
    ({}, 422, "q"),
    ({"q": "sort", "language": "klingon"}, 422, "indexed: go, java, javascript, php, python, ruby"),
    ({"q": "sort", "ranking": "psychic"}, 400, "ranking"),
    ({"q": "sort", "path": "src/[abc"}, 400, "bad glob"),
])
def test_bad_search_requests_are_json_errors(served, params, status, words):
    client, _, _ = served
    response = client.get("/api/search", params=params)
    assert response.status_code == status and words in response.json()["error"]


def test_a_query_that_is_not_utf8_is_rejected(served):
    client, _, _ = served
    response = client.get("/api/search?q=%ff%fe%fa")
    assert response.status_code == 400 and "UTF-8" in response.json()["error"]


def test_nothing_outside_the_indexed_roots_is_served(served, tmp_path):
    client, out, _ = served
    assert client.get("/api/functions/999999").status_code == 404
    assert client.get("/api/functions/..%2f..%2fetc%2fpasswd").status_code in (404, 422)
    assert client.get("/../../etc/passwd").status_code == 404
    # A row pointing outside the roots (a tampered index) is refused, not read.
    from fastapi.testclient import TestClient

    from codebert.tool.serve import create_app, inside_roots

    copy = tmp_path / "tampered"
    shutil.copytree(out, copy)
    generation = read_manifest(copy)["generation"]
    with sqlite3.connect(copy / f"meta-{generation}.sqlite") as db:
        file_id, function_id = db.execute("SELECT file_id, id FROM functions LIMIT 1").fetchone()
        db.execute("UPDATE files SET path = '/etc/hostname' WHERE id = ?", (file_id,))
    with pytest.raises(UserError, match="damaged index file"):  # the manifest's checksum sees the change...
        create_app(copy, threads=1)
    manifest = read_manifest(copy)
    del manifest["checksums"]  # ...so the tamperer rewrote the manifest too: the roots check still refuses the file
    (copy / "manifest.json").write_text(json.dumps(manifest))
    tampered = TestClient(create_app(copy, threads=1))
    response = tampered.get(f"/api/functions/{function_id}")
    assert response.status_code == 403 and "outside" in response.json()["error"]

    assert not inside_roots("/etc/passwd", [str(tmp_path)])
    assert not inside_roots(str(tmp_path) + "-evil/x.py", [str(tmp_path)])
    link = tmp_path / "link.py"
    link.symlink_to("/etc/hostname")
    assert not inside_roots(str(link), [str(tmp_path)])


def test_function_ids_beyond_sqlite_and_long_queries_on_the_detail_endpoint(served):
    client, _, _ = served
    for bad in ("99999999999999999999", "9223372036854775808", "0", "-1"):
        response = client.get(f"/api/functions/{bad}")
        assert response.status_code in (404, 422) and "error" in response.json(), bad
    assert client.get("/api/functions/99999999999999999999").status_code == 404
    hit = client.get("/api/search", params={"q": "memory", "k": 1}).json()["results"][0]
    response = client.get(f"/api/functions/{hit['id']}", params={"q": "memory " * 2000})
    assert response.status_code == 413 and "longer" in response.json()["error"]


def test_highlighting_marks_words_but_never_inside_an_entity():
    from codebert.tool.serve import highlight

    out = highlight("if a && b: return amp(x) < 3", "python", ["amp"])
    assert "&amp;&amp;" in out and out.count("<mark>amp</mark>") == 1 and "&<mark>" not in out
    plain = highlight("x = 1 & 2 # amp", "no-such-language", ["amp"])
    assert "&amp;" in plain and plain.count("<mark>") == 1
    # Marking costs one pass whatever the query: many words, a large function.
    import time

    code = "def f():\n" + "    value = compute(value) & mask\n" * 3000
    started = time.perf_counter()
    highlight(code, "python", [f"word{i}" for i in range(1000)] + ["value"])
    assert time.perf_counter() - started < 10  # was minutes with one pass per word


def test_the_server_picks_up_a_new_index_generation_without_a_restart(tmp_path, tiny_model_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from codebert.tool import serve

    monkeypatch.setattr(serve, "RELOAD_SECONDS", 0.0)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.py").write_text("def add_numbers(a, b):\n    return a + b\n")
    out = tmp_path / "idx"
    flags = {"paths": [str(root)], "model": str(tiny_model_dir), "out": str(out), "progress": "false", "threads": "1"}
    index_mod.main(load_config(index_mod.IndexConfig, None, flags))
    client = TestClient(serve.create_app(out, threads=1))
    assert [r["name"] for r in client.get("/api/search", params={"q": "add", "k": 5}).json()["results"]] == ["add_numbers"]
    (root / "b.go").write_text("package b\n\nfunc ReverseString(s string) string {\n\treturn s\n}\n")
    index_mod.main(load_config(index_mod.IndexConfig, None, flags))
    deadline, names = time.monotonic() + 30, set()
    while time.monotonic() < deadline:  # the new generation loads beside the old one, which answers meanwhile
        names = {r["name"] for r in client.get("/api/search", params={"q": "add", "k": 5}).json()["results"]}
        if names != {"add_numbers"}:
            break
        time.sleep(0.05)
    assert names == {"add_numbers", "ReverseString"}
    assert client.get("/api/search", params={"q": "reverse", "language": "go"}).status_code == 200


def test_requests_are_answered_from_the_old_generation_while_a_new_one_loads(served, monkeypatch):
    """Loading a generation takes seconds on a large index (vectors, BM25 postings): the batcher
    keeps answering from the one it has instead of waiting for it."""
    import threading

    from codebert.tool import serve

    client, _, _ = served
    searcher = client.app.state.searcher
    release, started = threading.Event(), threading.Event()
    slow = serve.Searcher._prepare

    def prepare(self, store):
        started.set()
        release.wait(30)
        return slow(self, store)

    monkeypatch.setattr(serve.Searcher, "_prepare", prepare)
    monkeypatch.setattr(serve, "RELOAD_SECONDS", 0.0)
    generation = searcher.store.manifest["generation"]
    searcher.store.manifest = {**searcher.store.manifest, "generation": generation - 1}  # as if a newer one were on disk
    try:
        assert client.get("/api/search", params={"q": "stack", "k": 3}).status_code == 200
        assert started.wait(10)  # the load began ...
        answer = client.get("/api/search", params={"q": "stack", "k": 3})  # ... and a request is answered meanwhile
        assert answer.status_code == 200 and answer.json()["results"]
        assert searcher.loading and searcher.store.manifest["generation"] == generation - 1  # from the old one
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while searcher.loading and time.monotonic() < deadline:
        time.sleep(0.05)
    assert searcher.store.manifest["generation"] == generation and not searcher.loading


def test_concurrent_queries_are_answered_each_with_its_own_results(served):
    """The batcher encodes queries that arrive together in one pass: each still gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    client, _, _ = served
    queries = ["parse a memory string", "pop from a stack", "read a file", "sort numbers"] * 4
    alone = {q: [r["id"] for r in client.get("/api/search", params={"q": q, "k": 3}).json()["results"]] for q in set(queries)}
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: client.get("/api/search", params={"q": q, "k": 3}).json()["results"], queries))
    assert all([r["id"] for r in got] == alone[q] for q, got in zip(queries, together))


@pytest.mark.parametrize("spread", ["bunched", "spread"])
def test_the_servers_torch_search_gives_the_exact_top_k(served, spread):
    """The server's torch top-k ranks and scores exactly as the numpy search of `codebert query`:
    through bf16 candidates when their certificate holds (spread vectors), through fp32 when it
    does not (the tiny model's vectors are bunched within 0.01 of each other)."""
    import numpy as np

    from codebert.tool.store import IndexStore, Ranking
    from codebert.tool.serve import TorchTopK

    _, out, _ = served
    plain = IndexStore(out)
    if spread == "spread":  # well-spread unit vectors, as a trained encoder gives: the bf16 path serves
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal(plain.exact[0].shape).astype(np.float32)
        plain.exact = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True), *plain.exact[1:])
    fast = IndexStore(out)
    fast.exact = plain.exact
    fast.top_k = TorchTopK(fast.exact[0], coarse=True)
    TorchTopK.CANDIDATES, saved = 6, TorchTopK.CANDIDATES  # fewer candidates than rows/4: the bf16 path runs
    try:
        queries = plain.exact[0][:6] + 0.05
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        for language in (None, "python"):
            a = plain.search_many(queries, 3, [language] * len(queries))
            b = fast.search_many(queries, 3, [language] * len(queries))
            assert [[r["id"] for r in row] for row in a] == [[r["id"] for r in row] for row in b]
            assert np.allclose([[r["score"] for r in row] for row in a], [[r["score"] for r in row] for row in b], atol=1e-5)
        rows = slice(0, len(plain.exact[1]))
        for k in (3, min(8, rows.stop)):  # 8: more than CANDIDATES (6 here), as hybrid's depth of 100 is more than 64
            top, scores, lows = fast.top_k(queries, rows, k, lowest=True)
            expected_top, expected_scores, expected_lows = plain.top_k(queries, rows, k, lowest=True)
            assert (top == expected_top).all() and np.allclose(scores, expected_scores, atol=1e-5)
            assert np.allclose(lows, expected_lows, atol=1e-6)  # hybrid's floor of the dense scale: exact
        fast.load_lexical_matrix()  # hybrid as the server ranks: torch top-k, BM25 from postings in memory
        texts = ["parse a memory string", "pop from a stack", "read the file", "sort numbers", "return the value", "x"]
        hybrid = Ranking("hybrid", "sum", 0.3)
        for language in (None, "python"):
            a = plain.rank_many(queries, texts, 5, [language] * len(queries), hybrid)
            b = fast.rank_many(queries, texts, 5, [language] * len(queries), hybrid)
            assert [[r["id"] for r in row] for row in a] == [[r["id"] for r in row] for row in b]
            assert np.allclose([[r["score"] for r in row] for row in a], [[r["score"] for r in row] for row in b], atol=1e-5)
    finally:
        TorchTopK.CANDIDATES = saved
    if spread == "bunched":
        assert fast.top_k.uncertified > 0  # the fp32 pass caught what bf16 could not order
    else:
        assert fast.top_k.uncertified <= 2  # the bf16 pass certified (nearly) every query
