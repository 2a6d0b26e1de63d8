"""End to end in a real browser: the page served on loopback, driven in headless Chromium.

Needs Debian's chromium (`.ci/run` installs it) and the playwright package (dev extra); the test
is skipped, saying why, where either is missing.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from codebert.tool import index as index_mod
from codebert.config import load_config
from conftest import SAMPLES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    uvicorn = pytest.importorskip("uvicorn")
    from codebert.tool.serve import create_app

    root = tmp_path_factory.mktemp("tree") / "samples"
    shutil.copytree(SAMPLES, root)
    out = tmp_path_factory.mktemp("index") / "idx"
    index_mod.main(load_config(index_mod.IndexConfig, None, {"paths": [str(root)], "model": str(tiny_model_dir),
                                                             "out": str(out), "progress": "false", "threads": "1"}))
    port = free_port()
    config = uvicorn.Config(create_app(out, threads=1), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_type_a_query_see_results_open_one(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.goto(server)
        page.wait_for_function("document.querySelectorAll('#language option').length > 1")  # stats loaded
        page.fill("#query", "parse a memory string")
        page.click("button[type=submit]")
        page.wait_for_selector("#results li")
        items = page.query_selector_all("#results li")
        assert len(items) == 10
        assert "samples" in items[0].inner_text() and page.query_selector("#results li pre.code") is not None
        items[0].click()
        page.wait_for_selector("#detail:not([hidden]) pre.code")
        assert ":" in page.inner_text("#detail .where")
        assert page.query_selector("#results li pre.code mark") is not None  # query words marked in the snippets
        assert "q=parse+a+memory+string" in page.url  # the search lives in the URL
        page.select_option("#language", "go")
        page.click("button[type=submit]")
        page.wait_for_function("[...document.querySelectorAll('#results li .where')].every(e => e.textContent.includes('.go:'))")
        assert "language=go" in page.url
        # A link to a search opens with its results; the back button returns to the previous search.
        linked = browser.new_page()
        linked.goto(server + "?q=pop+from+a+stack&language=go")
        linked.wait_for_selector("#results li")
        assert linked.input_value("#query") == "pop from a stack" and linked.input_value("#language") == "go"
        assert all(".go:" in e.inner_text() for e in linked.query_selector_all("#results li .where"))
        page.go_back()
        page.wait_for_function("document.querySelector('#language').value === ''")
        # Path filters as the command line takes them: globs, ! leaves out; the same results as the API's
        page.select_option("#language", "")
        page.fill("#paths", "**/*.py **/*.java !**/memory.py")
        page.click("button[type=submit]")
        page.wait_for_function("document.querySelector('#status').textContent.includes('results in')"
                               " && [...document.querySelectorAll('#results li .where')].every("
                               "e => /\\.(py|java):\\d+-\\d+$/.test(e.textContent) && !e.textContent.includes('memory.py'))")
        wheres = [e.inner_text() for e in page.query_selector_all("#results li .where")]
        assert wheres and "paths=" in page.url
        import httpx

        api = httpx.get(server + "api/search", params={"q": "parse a memory string", "k": 10, "path": ["**/*.py", "**/*.java"],
                                                       "exclude": "**/memory.py"}).json()["results"]
        assert wheres == [r["location"] for r in api]
        browser.close()
