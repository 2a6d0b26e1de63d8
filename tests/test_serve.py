"""The HTTP API and the page: search, detail, stats, bad inputs, the indexed-roots boundary."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from codebert import index as index_mod
from codebert.config import load_config
from conftest import SAMPLES


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    from fastapi.testclient import TestClient

    from codebert.serve import create_app

    root = tmp_path_factory.mktemp("tree") / "samples"
    shutil.copytree(SAMPLES, root)
    out = tmp_path_factory.mktemp("index") / "idx"
    index_mod.main(load_config(index_mod.IndexConfig, None, {"paths": [str(root)], "model": str(tiny_model_dir),
                                                             "out": str(out), "progress": "false", "threads": "1"}))
    return TestClient(create_app(out, threads=1)), out, root


def test_search_returns_ranked_highlighted_results(served):
    client, _, root = served
    body = client.get("/api/search", params={"q": "parse a memory string", "k": 5}).json()
    assert len(body["results"]) == 5
    first = body["results"][0]
    assert first["path"].startswith(str(root)) and first["start_line"] >= 1 and "<pre" in first["snippet_html"]
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    go = client.get("/api/search", params={"q": "stack", "k": 3, "language": "go"}).json()["results"]
    assert go and {r["language"] for r in go} == {"go"}


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

    from codebert.serve import create_app, inside_roots

    copy = tmp_path / "tampered"
    shutil.copytree(out, copy)
    generation = index_mod.read_manifest(copy)["generation"]
    with sqlite3.connect(copy / f"meta-{generation}.sqlite") as db:
        file_id, function_id = db.execute("SELECT file_id, id FROM functions LIMIT 1").fetchone()
        db.execute("UPDATE files SET path = '/etc/hostname' WHERE id = ?", (file_id,))
    tampered = TestClient(create_app(copy, threads=1))
    response = tampered.get(f"/api/functions/{function_id}")
    assert response.status_code == 403 and "outside" in response.json()["error"]

    assert not inside_roots("/etc/passwd", [str(tmp_path)])
    assert not inside_roots(str(tmp_path) + "-evil/x.py", [str(tmp_path)])
    link = tmp_path / "link.py"
    link.symlink_to("/etc/hostname")
    assert not inside_roots(str(link), [str(tmp_path)])
