"""The site of ``make book``: how its sources are made, and the built site in a real browser.

The browser test builds the site from the outputs stored in ``notebooks/`` (what a fresh clone
has) plus a few records, serves it on 127.0.0.1 and opens every page in headless Chromium,
driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: no driver, no
extra package). It fails on a JavaScript error, a resource that does not load (images
included), a request to another host, or an internal link to a missing page or anchor.
"""
import base64
import fcntl
import functools
import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest

from peakllm.cli import book
from peakllm.cli import run as workbook
from peakllm.core.paths import REPO
from peakllm.core.records import Recorder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def test_the_table_of_contents_follows_the_notebook_list():
    stems = [p.stem for p in workbook.notebooks()]
    toc = book.toc(stems)
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert files == [f"notebooks/{s}" for s in stems] + ["results", "teaching"]
    assert toc["parts"][1]["caption"].startswith("Case study 1") and toc["root"] == "index"


def test_a_run_lacking_notebooks_is_completed_from_the_stored_outputs(tmp_path):
    first = workbook.notebooks()[0]
    shutil.copy(first, tmp_path / first.name)
    folder, chosen = book.sources(tmp_path)
    assert folder == tmp_path and list(chosen) == [p.stem for p in workbook.notebooks()]
    assert chosen[first.stem] == tmp_path / first.name
    assert all(p.parent == workbook.NOTEBOOKS for s, p in chosen.items() if s != first.stem)
    with pytest.raises(FileNotFoundError, match="run_dir="):
        book.sources(tmp_path / "empty")


def test_the_copy_folds_solutions_and_drops_this_machines_paths(tmp_path):
    src = workbook.notebooks()[-1]
    nb = json.loads(src.read_text())
    nb["cells"][0]["source"] = [f"results_path = \"{REPO}{os.sep}runs{os.sep}x.json\""]
    (tmp_path / "in.ipynb").write_text(json.dumps(nb))
    book.copy_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb")
    out = json.loads((tmp_path / "out.ipynb").read_text())
    solutions = [c for c in out["cells"] if "solution" in c["metadata"].get("tags", [])]
    assert solutions and all(c["source"].startswith("::::{dropdown} Solution") for c in solutions)
    assert str(REPO) not in (tmp_path / "out.ipynb").read_text()
    assert "runs/x.json" in "".join(out["cells"][0]["source"]).replace(os.sep, "/")


def test_the_build_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="out="):
        book.build(workbook.NOTEBOOKS, tmp_path)
    assert (tmp_path / "mine.txt").exists()


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe``: JSON messages ending in NUL,
    commands on the child's fd 3, replies and events on its fd 4."""

    def __init__(self, profile: Path):
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def wire():  # in the child, before exec; by way of fds >= 10, as either may already be 3 or 4
            a, b = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.events, self.replies, self._id = queue.Queue(), {}, 0
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while chunk := os.read(self._r, 1 << 16):
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            for raw in msgs:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self.replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def call(self, method, session=None, timeout=30, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: self._id in self.replies, timeout):
                raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
            reply = self.replies.pop(self._id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def close(self):
        self.proc.kill()
        self.proc.wait(10)
        os.close(self._w)


class Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        self.ids |= {v for k, v in attrs if k in ("id", "name") and v}


def visit(dt, session, url, base):
    """Load ``url``; returns (problems, internal links, screenshot PNG)."""
    while not dt.events.empty():
        dt.events.get_nowait()
    dt.call("Page.navigate", session, url=url)
    problems, inflight, loaded, quiet_since = [], {}, False, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ev = dt.events.get(timeout=0.1)
        except queue.Empty:
            ev = None
        if ev is None:
            if loaded and not inflight:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 0.5:
                    break
            continue
        quiet_since = None
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Page.loadEventFired":
            loaded = True
        elif m == "Network.requestWillBeSent":
            req = p["request"]["url"]
            if not (req.startswith(base) or req.startswith("data:")):
                problems.append(f"request to another host: {req}")
            inflight[p["requestId"]] = req
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            problems.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == "Network.loadingFailed":
            req = inflight.pop(p["requestId"], p["requestId"])
            if not p.get("canceled"):
                problems.append(f"failed to load ({p.get('errorText')}): {req}")
        elif m == "Network.loadingFinished":
            inflight.pop(p["requestId"], None)
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            problems.append(f"JavaScript error: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p["type"] == "error":
            problems.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            problems.append(f"browser log: {p['entry']['text']} {p['entry'].get('url', '')}")
    else:
        problems.append("the page did not finish loading in 60 s")
    images = dt.call("Runtime.evaluate", session, awaitPromise=True, returnByValue=True, expression="""
        Promise.all(Array.from(document.images).map(img => {
            img.loading = 'eager';
            return (img.complete ? Promise.resolve() : new Promise(ok => { img.onload = img.onerror = ok; }))
                .then(() => [img.currentSrc || img.src, img.naturalWidth]);
        }))""")["result"]["value"]
    problems += [f"image did not load: {src}" for src, width in images if not width]
    links = dt.call("Runtime.evaluate", session, returnByValue=True,
                    expression="Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")["result"]["value"]
    shot = base64.b64decode(dt.call("Page.captureScreenshot", session, format="png")["data"])
    return problems, [u for u in links if u.startswith(base)], len(images), shot


def check_links(links: dict[str, set[str]]) -> list[str]:
    """Every internal link: its page answers 200 and its #anchor exists there."""
    broken, cache = [], {}
    for target, pages in sorted(links.items()):
        url, frag = urldefrag(target)
        if url not in cache:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    parser = Anchors()
                    if r.headers.get_content_type() == "text/html":
                        parser.feed(r.read().decode("utf-8", "replace"))
                    cache[url] = parser.ids
            except OSError as e:
                cache[url] = e
        where = sorted(pages)[0]
        if isinstance(cache[url], Exception):
            broken.append(f"{target} (from {where}): {cache[url]}")
        elif frag and frag not in cache[url]:
            broken.append(f"{target} (from {where}): no anchor #{frag}")
    return broken


def fixture_records() -> list[dict]:
    """A few records in the shape a run writes (values made up for the test), so the results page
    has tables and plots to show."""
    rec = Recorder("10_sparsegpt_one_shot_pruning", {"model_name": "tiny-opt"}, device="cpu")
    rec.add("perplexity", 100.0, "ppl", method="dense", pattern="dense", sparsity=0.0, dataset="shakespeare")
    rec.add("perplexity", 140.0, "ppl", method="magnitude", pattern="unstructured", sparsity=0.5, dataset="shakespeare")
    for seed, v in enumerate([110.0, 111.0, 112.0]):
        rec.add("perplexity", v, "ppl", method="sparsegpt", pattern="unstructured", sparsity=0.5,
                dataset="shakespeare", seed=seed)
    q = Recorder("21_weight_quantization", {"model_name": "tiny-opt"}, device="cpu")
    for method, bits, v in [("dense", "32", 100.0), ("rtn", "4", 104.0), ("gptq", "4", 101.0)]:
        q.add("perplexity", v, "ppl", method=method, bits=bits, dataset="shakespeare")
    return rec.records + q.records


@pytest.mark.slow
def test_every_page_of_the_site_loads_in_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium): the site is not checked")
    run = tmp_path / "run"
    run.mkdir()
    for nb in workbook.notebooks():
        shutil.copy(nb, run / nb.name)
    (run / "results.json").write_text(json.dumps(fixture_records()))
    t0 = time.perf_counter()
    info = book.build(run, tmp_path / "book")
    built = time.perf_counter() - t0
    html = info["html"].parent
    assert info["tables"] == 2 and info["mathjax"], info
    assert book.verify(html)["pages"] >= len(workbook.notebooks()) + 3

    dt = DevTools(tmp_path / "profile")  # before the server thread: the child is forked without threads
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        target = dt.call("Target.createTarget", url="about:blank")["targetId"]
        session = dt.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            dt.call(f"{domain}.enable", session)
        dt.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1, mobile=False)
        pages = sorted(str(p.relative_to(html)) for p in html.rglob("*.html") if "_static" not in p.parts)
        problems, links, n_images, shots = {}, {}, 0, {}
        for rel in pages:
            found, hrefs, n, shot = visit(dt, session, urljoin(base, rel), base)
            n_images += n
            shots[rel] = shot
            if found:
                problems[rel] = found
            for h in hrefs:
                links.setdefault(h, set()).add(rel)
        broken = check_links(links)
    finally:
        dt.close()
        server.shutdown()
    keep = Path(os.environ.get("PEAKLLM_BOOK_SCREENSHOTS", tmp_path))
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "book_landing.png").write_bytes(shots["index.html"])
    (keep / "book_notebook.png").write_bytes(shots["notebooks/10_sparsegpt_one_shot_pruning.html"])
    print(f"built in {built:.0f} s; {len(pages)} pages, {n_images} images, {len(links)} internal links")
    assert not problems, json.dumps(problems, indent=1)[:6000]
    assert not broken, "\n".join(broken[:40])
    assert n_images >= 20 and len(links) > 50
    assert all(shot.startswith(b"\x89PNG") and len(shot) > 20_000 for shot in shots.values())
    results = (html / "results.html").read_text()
    assert results.count("<table") >= 4 and re.search(r"device <code[^>]*><span[^>]*>cpu", results)
    landing = (html / "index.html").read_text()
    assert book.BINDER in landing and "notebooks/10_sparsegpt_one_shot_pruning.html" in landing
