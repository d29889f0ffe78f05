"""The course website (`python -m grading site`), end to end, in headless Chromium (Playwright, Debian's chromium).

The site is built once (solutions behind toggles, the mode with something to click), served by a throwaway
http.server on 127.0.0.1, and every chapter page is read as a visitor sees it: its heading, its figures
loaded, its math typeset, the reference answers collapsed until clicked, no console error or failed request,
and every internal link (other pages and #anchors) pointing at a page and an id that exist. The same site is
also opened from disk (file://), as the README suggests: math, figures and search work there too.
Browser machinery (the session's one Chromium, new_page, failure screenshots) is shared with the
JupyterLab tests; without Chromium or Playwright these tests skip with the reason (fail under TM_E2E_REQUIRE=1).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlsplit
from urllib.request import url2pathname

import nbformat
import pytest

from grading.paths import solutions_notebook
from grading.site import HIDE_SOLUTION, SHOW_SOLUTION, build_site, missing_site_tools, site_notebook
from jupyterlab_harness import REPO, new_page, require_browser_stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("site-e2e")]

MODE = "toggle"
MATHJAX_TIMEOUT = 60_000  # ms


# --------------------------------------------------------------------------- fixtures


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


class SiteServer:
    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self._ids: dict[str, set[str]] = {}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy

    def ids(self, url: str) -> set[str]:
        """The ids (and <a name>s) of the page at URL, fetched once; an AssertionError if it is not served."""
        if url not in self._ids:
            try:
                with self._opener.open(url, timeout=10) as resp:
                    body = resp.read().decode("utf-8", "replace")
                    kind = resp.headers.get_content_type()
            except OSError as exc:
                raise AssertionError(f"{url}: {exc}") from None
            parser = _Ids()
            if kind == "text/html":
                parser.feed(body)
            self._ids[url] = parser.ids
        return self._ids[url]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


SITE_E2E = "site e2e tests"


def require_site_tools() -> None:
    missing = missing_site_tools()
    if missing:
        reason = f"{', '.join(missing)} not installed (pip install -e \".[site]\")"
        if os.environ.get("TM_E2E_REQUIRE", "") not in ("", "0"):
            pytest.fail(f"{reason}, and TM_E2E_REQUIRE is set")
        pytest.skip(f"{reason}: {SITE_E2E} skipped")


@pytest.fixture(scope="session", autouse=True)
def site_prerequisites():
    """Chromium, Playwright and the site's tools, checked before any other fixture (the session's Chromium
    included), so that these tests skip, or fail under TM_E2E_REQUIRE=1, with their own reason."""
    require_browser_stack(SITE_E2E)  # no point building what nobody can look at
    require_site_tools()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "html"
    build_site(out, solutions=MODE, root=REPO, log=lambda *_: None)
    server = SiteServer(out)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site_browser(site, chromium):
    return chromium


@pytest.fixture
def site_page(site_browser):
    """A fresh tab that records console errors, uncaught exceptions and failed requests in page.console_errors."""
    page = new_page(site_browser)
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(f"console: {msg.text}"))
    page.on("requestfailed", lambda req: page.console_errors.append(f"request failed: {req.url} ({req.failure})"))
    page.on("response", lambda resp: resp.status >= 400 and page.console_errors.append(f"HTTP {resp.status}: {resp.url}"))
    yield page
    page.context.close()


# --------------------------------------------------------------------------- helpers


def first_heading(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise AssertionError("the notebook has no '# ' heading")


def open_page(page, url: str) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url}: HTTP {response.status if response else 'no response'}"
    # MathJax typesets after load; wait for it where the page has math
    page.wait_for_function("() => !window.MathJax || (MathJax.startup && MathJax.startup.promise)",
                           timeout=MATHJAX_TIMEOUT)
    page.evaluate("() => window.MathJax ? MathJax.startup.promise : null")
    page.evaluate("""() => Promise.all([...document.images].map(img => img.complete ? null :
                        new Promise(done => { img.onload = img.onerror = done; })))""")


def check_links(page, site: SiteServer) -> int:
    """Every same-origin <a href> on PAGE leads to a served page, and its #fragment to an id there."""
    links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href])")
    here = page.url
    broken = []
    checked = 0
    for raw, absolute in links:
        if urlsplit(absolute).scheme not in ("http", "https") or not absolute.startswith(site.url):
            continue  # external (none expected), mailto:, javascript:
        target, fragment = urldefrag(absolute)
        checked += 1
        try:
            ids = site.ids(target) if target != urldefrag(here)[0] else set(
                page.evaluate("() => [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.name)"))
        except AssertionError as exc:
            broken.append(f"{raw!r}: {exc}")
            continue
        if fragment and fragment not in ids:
            broken.append(f"{raw!r}: no id {fragment!r} on {target}")
    assert not broken, f"{here}: broken internal links:\n  " + "\n  ".join(broken)
    return checked


# --------------------------------------------------------------------------- tests


def test_index_lists_every_chapter(site, site_page):
    from grading.paths import chapters

    open_page(site_page, site.url)
    assert "Transformer Mechanics" in site_page.title()
    toc = site_page.locator("article a.reference.internal")
    hrefs = [toc.nth(i).get_attribute("href") for i in range(toc.count())]
    for chapter in chapters(REPO):
        assert f"{chapter}/{chapter}.html" in hrefs, f"the index does not link {chapter}: {hrefs}"
    assert check_links(site_page, site) > 0
    for name in ("search.html", "genindex.html"):
        open_page(site_page, site.url + name)
        check_links(site_page, site)
    assert not site_page.console_errors, site_page.console_errors


def figure_count(nb) -> int:
    """The notebook's figures: its image/png outputs."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


# Every <img> of the article, in page order: is it a cell output, did it load, how large is it drawn.
IMAGES_JS = """() => [...document.querySelectorAll('article img')].map(img => {
    const box = img.getBoundingClientRect();
    return {src: img.getAttribute('src'), output: !!img.closest('.cell_output'),
            loaded: img.complete && img.naturalWidth > 0 && img.naturalHeight > 0,
            width: box.width, height: box.height, hidden: getComputedStyle(img).visibility === 'hidden'};
})"""


def check_figures(page, chapter: str, figures: int) -> None:
    """The page shows exactly FIGURES figures (cell-output images), each loaded and drawn at a non-zero size;
    every other image of the article loads too."""
    images = page.evaluate(IMAGES_JS)
    outputs = [img for img in images if img["output"]]
    assert len(outputs) == figures, (f"{chapter}: the reference notebook has {figures} figure output(s), the page "
                                     f"shows {len(outputs)}: {[img['src'] for img in outputs]}")
    broken = [img["src"] for img in images if not img["loaded"]]
    assert not broken, f"{chapter}: images that did not load: {broken}"
    invisible = [img["src"] for img in outputs if img["width"] <= 0 or img["height"] <= 0 or img["hidden"]]
    assert not invisible, f"{chapter}: figures drawn at zero size or hidden: {invisible}"


def test_chapter_page(site, site_page, chapter):
    nb = nbformat.read(solutions_notebook(chapter, REPO), as_version=4)
    shown = site_notebook(chapter, MODE, REPO)
    figures = figure_count(nb)
    assert figure_count(shown) == figures, f"{chapter}: the site's notebook dropped a figure output"
    answers = [c for c in shown.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]

    open_page(site_page, f"{site.url}{chapter}/{chapter}.html")
    page = site_page

    # title and heading
    heading = first_heading(nb)
    h1 = page.evaluate("""() => { const h = document.querySelector('article h1').cloneNode(true);
                                  h.querySelectorAll('.headerlink').forEach(a => a.remove()); return h.textContent; }""")
    plain = " ".join(heading.replace("`", "").replace("*", "").split())
    assert " ".join(h1.split()) == plain, f"{chapter}: the page's h1 is {h1!r}, the notebook's heading {heading!r}"
    assert heading.split("·")[-1].strip()[:20] in page.title(), f"{chapter}: title is {page.title()!r}"

    # figures: exactly the reference notebook's figure outputs, every one loaded and drawn
    check_figures(page, chapter, figures)

    # math: typeset by the site's own MathJax, without a TeX error
    if "$" in "".join(c.source for c in nb.cells if c.cell_type == "markdown"):
        assert page.locator("mjx-container").count() > 0, f"{chapter}: no typeset math"
        errors = page.locator("mjx-merror")
        assert errors.count() == 0, f"{chapter}: MathJax errors: {errors.first.inner_text()}"

    # reference answers: one collapsed toggle per answer cell; a click shows the code
    toggles = page.locator("details.hide.above-input")
    assert toggles.count() == len(answers), f"{chapter}: {toggles.count()} toggles for {len(answers)} answers"
    if answers:
        first = toggles.first
        assert first.get_attribute("open") is None, f"{chapter}: a reference answer is shown expanded"
        code = first.locator("pre").first
        assert not code.is_visible(), f"{chapter}: the collapsed answer's code is visible"
        assert SHOW_SOLUTION in first.locator("summary").inner_text()
        first.locator("summary").click()
        code.wait_for(state="visible")
        first_line = answers[0].source.strip().splitlines()[0].strip()
        assert first_line in code.inner_text(), f"{chapter}: the toggle does not hold the reference answer"
        assert HIDE_SOLUTION in first.locator("summary").inner_text()

    assert check_links(page, site) > 0
    assert not page.console_errors, f"{chapter}: {page.console_errors}"


# --------------------------------------------------------------------------- opened from disk


def test_site_opened_from_disk(site, site_page):
    """file://.../index.html, as the README suggests: every chapter page typesets its math and shows its
    figures, links lead to files that exist, and search lists results, all without a console error."""
    from grading.paths import chapters

    page = site_page
    index = (site.root / "index.html").as_uri()
    open_page(page, index)
    assert "Transformer Mechanics" in page.title()
    hrefs = page.evaluate("() => [...document.querySelectorAll('article a.reference.internal')].map(a => a.href)")
    for chapter in chapters(REPO):
        url = (site.root / chapter / f"{chapter}.html").as_uri()
        assert url in hrefs, f"the index opened from disk does not link {url}: {hrefs}"
        open_page(page, url)
        nb = nbformat.read(solutions_notebook(chapter, REPO), as_version=4)
        if "$" in "".join(c.source for c in nb.cells if c.cell_type == "markdown"):
            assert page.locator("mjx-container").count() > 0, f"{chapter} (file://): no typeset math"
            assert page.locator("mjx-merror").count() == 0, f"{chapter} (file://): MathJax errors"
        check_figures(page, f"{chapter} (file://)", figure_count(nb))
        links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
        for href in sorted({h.split("#")[0] for h in links if h.startswith("file:")}):
            target = Path(url2pathname(urlsplit(href).path))
            assert target.is_file(), f"{chapter} (file://): a link to {href}, which is not a file"
    open_page(page, (site.root / "search.html").as_uri() + "?q=softmax")
    page.wait_for_function("() => document.querySelectorAll('#search-results li').length > 0", timeout=30_000)
    assert not page.console_errors, page.console_errors
