"""The docs site: `scripts/docs.py` builds it, every page loads in headless Chromium with no broken link, no missing
image and no console error, and the links in pyproject.toml and the module docstrings point at pages it produces.

Chromium is Debian's `chromium` package (installed by .ci/run), driven through the DevTools protocol over a
websocket (websocket-client): no browser download. Screenshots of the index and a chapter page are saved in the
test's tmp folder and, when FEWKIT_DOCS_SHOTS names a folder, copied there.
"""

import base64
import functools
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_PAGE = "kg.html"  # chapter 3's first notebook: prose, code, outputs and figures with Chinese labels


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site, built from this checkout into a tmp folder: (folder, build output)."
    out = tmp_path_factory.mktemp("docs") / "_docs"
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts/docs.py"), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    print(r.stdout, r.stderr, f"build took {time.perf_counter() - t0:.1f} s wall")
    assert r.returncode == 0, r.stderr
    return out, r.stderr


class Refs(HTMLParser):
    "Every href/src of a page, and its element ids."

    def __init__(self):
        super().__init__()
        self.refs = []
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" and v:
                self.ids.add(v)
            if k in ("href", "src") and v is not None:
                self.refs.append((tag, k, v))


def parse(path: Path) -> Refs:
    p = Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_every_notebook_and_module_has_a_page(site):
    out, build_log = site
    assert "two notebooks make the page" not in build_log, build_log
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        name = re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower()).removesuffix(".ipynb")
        assert (out / f"{name}.html").is_file(), nb
        assert (out / f"{name}.html.md").is_file(), nb
    for py in (ROOT / "fewkit").rglob("*.py"):
        if py.name in ("_modidx.py", "__init__.py"):
            continue
        mod = ".".join(py.relative_to(ROOT).with_suffix("").parts)
        assert (out / "api" / f"{mod}.html").is_file(), mod


def test_links_resolve_without_a_browser(site):
    "Internal links (and their #fragments) and images resolve; nothing is loaded from another host."
    out, build_log = site
    pages = {p: parse(p) for p in out.rglob("*.html")}
    bad = []
    for page, refs in pages.items():
        for tag, attr, v in refs.refs:
            u = urlparse(v)
            if u.scheme in ("http", "https", "mailto") or v.startswith("//"):
                if tag in ("img", "script", "link", "iframe") and u.scheme != "mailto":
                    bad.append(f"{page.name}: <{tag} {attr}={v}> loads from the network")
                continue
            if u.scheme == "data":
                continue
            target = (page.parent / unquote(u.path)).resolve() if u.path else page
            if not target.is_file():
                bad.append(
                    f"{page.relative_to(out)}: {v} -> missing {target.relative_to(out) if out in target.parents else target}"
                )
                continue
            if u.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(u.fragment) not in ids:
                    bad.append(f"{page.relative_to(out)}: {v} -> no id {u.fragment!r} in {target.name}")
    assert not bad, "\n".join(bad) + "\n\nthe build said:\n" + build_log


def test_docs_links_point_at_built_pages(site):
    "pyproject's Documentation URL and every module's `Docs:` line (written by nbdev) name a page of the site."
    out, _ = site
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Documentation"]
    assert base.endswith("/"), base
    assert (out / "index.html").is_file()
    seen = 0
    missing = []
    for py in sorted((ROOT / "fewkit").rglob("*.py")):
        for url in re.findall(r"^Docs: (\S+?)(?:\"\"\")?$", py.read_text(encoding="utf-8"), re.MULTILINE):
            seen += 1
            if not url.startswith(base) or not (out / url[len(base) :]).is_file():
                missing.append(f"{py.relative_to(ROOT)}: {url}")
    assert seen > 20, seen
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------------------------------------------------
# The browser


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class CDP:
    "A minimal Chrome DevTools Protocol client over one page's websocket: commands in order, events collected."

    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        # Chromium refuses websocket connections whose Origin it does not allow: send none
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps(dict(id=self.next_id, method=method, params=params)))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for i, e in enumerate(self.events):
                if e["method"] == event:
                    return self.events.pop(i)
            self.ws.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(event)

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    "Headless Chromium and a local server (127.0.0.1 only) over the built site: yields (cdp, base url)."
    exe = chromium_binary()
    if exe is None:
        msg = (
            "CHROMIUM NOT FOUND: the docs site was NOT checked in a browser. Install Debian's chromium "
            "(apt-get install -y chromium fonts-noto-cjk; .ci/run does this) to run this test."
        )
        warnings.warn(msg)
        pytest.skip(msg)
    pytest.importorskip("websocket", reason="websocket-client is missing: pip install -e '.[dev]'")
    out, _ = site
    handler = functools.partial(Quiet, directory=str(out))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tmp_path_factory.mktemp("chromium-profile")
    args = [
        exe,
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--mute-audio",
        "--no-pings",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cdp = None
    try:
        port_file = profile / "DevToolsActivePort"
        t0 = time.monotonic()
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() - t0 < 120, "chromium did not open its DevTools port in 120 s"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        page = next(t for t in targets if t["type"] == "page")
        cdp = CDP(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        yield cdp, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        if cdp is not None:
            cdp.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
        server.server_close()


# Run in the page after load: links, broken images, ids.
PAGE_FACTS = """JSON.stringify({
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120)),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  title: document.title,
})"""


def problems_in(events: list, base: str) -> list[str]:
    "Console errors, uncaught exceptions, failed loads and HTTP errors among the DevTools events of one page."
    out = []
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"load failed: {p.get('errorText')} ({p.get('type')})")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith((base, "data:")):
            out.append(f"request to another host: {p['request']['url'][:120]}")
    return out


def test_every_page_in_chromium(site, browser, tmp_path):
    "Load every page; fail on a console error, a failed load, a broken image or an internal link to nothing."
    out, _ = site
    cdp, base = browser
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    assert "index.html" in pages and CHAPTER_PAGE in pages
    facts = {}
    bad = []
    t0 = time.perf_counter()
    for page in pages:
        cdp.events.clear()
        cdp.send("Page.navigate", url=base + page)
        cdp.wait_for("Page.loadEventFired")
        res = cdp.send("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)
        f = json.loads(res["result"]["value"])
        facts[page] = f
        bad += [f"{page}: {p}" for p in problems_in(cdp.events, base)]
        bad += [f"{page}: broken image {src}" for src in f["broken_images"]]
        if page in ("index.html", CHAPTER_PAGE):
            shot = cdp.send("Page.captureScreenshot", format="png")
            (tmp_path / f"docs_{page.replace('/', '_').removesuffix('.html')}.png").write_bytes(
                base64.b64decode(shot["data"])
            )
        if page == CHAPTER_PAGE:
            # the page's last figure (the sampled subgraph, whose labels are Chinese names when a CJK font rendered it)
            cdp.send(
                "Runtime.evaluate", expression="[...document.querySelectorAll('.output img')].pop().scrollIntoView()"
            )
            time.sleep(0.3)
            shot = cdp.send("Page.captureScreenshot", format="png")
            (tmp_path / "docs_kg_figure.png").write_bytes(base64.b64decode(shot["data"]))
    seconds = time.perf_counter() - t0
    # internal links: the page exists and, with a #fragment, holds that id
    for page, f in facts.items():
        for href in f["links"]:
            if not href.startswith(base):
                continue
            path, _, frag = href[len(base) :].partition("#")
            path = unquote(path) or "index.html"
            if not (out / path).is_file():
                bad.append(f"{page}: link to missing {path}")
            elif frag and path.endswith(".html") and path in facts and unquote(frag) not in facts[path]["ids"]:
                bad.append(f"{page}: link to {path}#{frag}, no such id")
    print(f"{len(pages)} pages loaded in {seconds:.1f} s; screenshots in {tmp_path}")
    dest = os.environ.get("FEWKIT_DOCS_SHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("docs_*.png"):
            shutil.copy2(png, Path(dest) / png.name)
    assert len(list(tmp_path.glob("docs_*.png"))) == 3
    assert not bad, f"{len(bad)} problems:\n" + "\n".join(sorted(set(bad)))
