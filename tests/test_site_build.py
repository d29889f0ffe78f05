"""The static site (`python -m grading site`): built in both solution modes, read as text, no browser.

The site is built by the one command instructors run, `python -m grading site --out DIR [--solutions toggle]`,
in a subprocess. Every chapter page exists and is linked from the index, and shows exactly its reference
notebook's figures; no hidden-test line ever reaches a page; in `omit`
mode no solution line does either, while in `toggle` mode the reference answers are there, collapsed; the
site loads nothing from another host and carries no widget state. The browser checks (figures load, links
resolve, the toggle opens) are in tests/e2e/test_site.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from grading.check import secret_lines, split_secret
from grading.paths import solutions_notebook
from grading.site import SHOW_SOLUTION, WIDGET_VIEW, build_site, missing_site_tools, site_notebook

ROOT = Path(__file__).resolve().parent.parent


def require_site_tools() -> None:
    missing = missing_site_tools()
    if missing:
        reason = f"{', '.join(missing)} not installed (pip install -e \".[site]\")"
        if os.environ.get("TM_E2E_REQUIRE", "") not in ("", "0"):
            pytest.fail(f"{reason}, and TM_E2E_REQUIRE is set")
        pytest.skip(f"{reason}: site build tests skipped")


CLI_OUTPUT: dict[str, str] = {}  # what `python -m grading site` printed, for each mode


def grading_site(*args: str) -> subprocess.CompletedProcess:
    """`python -m grading site ARGS`, as an instructor runs it, from the repository root."""
    return subprocess.run([sys.executable, "-m", "grading", "site", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TM_ROOT=str(ROOT)))


@pytest.fixture(scope="module", params=["omit", "toggle"])
def site(request, tmp_path_factory):
    """The site built by the command line: `--out DIR` (omit, the default) or `--out DIR --solutions toggle`."""
    require_site_tools()
    out = tmp_path_factory.mktemp(f"site-{request.param}") / "html"
    args = ["--out", str(out)] + (["--solutions", request.param] if request.param != "omit" else [])
    proc = grading_site(*args)
    assert proc.returncode == 0, f"python -m grading site {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    CLI_OUTPUT[request.param] = proc.stdout
    return request.param, out


class _Text(HTMLParser):
    """A page's text (what a reader can see or uncover), its tags' attributes, and <details> nesting."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.in_details: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.output_images: list[str] = []  # src of each <img> inside a cell's output (a figure)
        self._details = 0
        self._skip = 0
        self._divs: list[bool] = []  # open <div>s: is each a cell output?

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "details":
            self._details += 1
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "div":
            self._divs.append("cell_output" in (attrs.get("class") or "").split())
        if tag == "img" and any(self._divs):
            self.output_images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "details":
            self._details -= 1
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "div" and self._divs:
            self._divs.pop()

    def handle_data(self, data):
        if self._skip:
            return
        self.parts.append(data)
        if self._details:
            self.in_details.append(data)


def read_page(path: Path) -> _Text:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def lines_of(parts: list[str]) -> set[str]:
    return {line.strip() for line in "".join(parts).splitlines()}


def region_lines(nb, *, hidden: bool) -> set[str]:
    """Secret lines (grading.check.secret_lines) inside hidden-test regions (hidden=True) or solution regions."""
    inside = set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        is_test = bool(meta.get("grade")) and not meta.get("solution")
        if is_test if hidden else bool(meta.get("solution")):
            inside.update(line.strip() for line in split_secret(cell.source)[0])
    return secret_lines(nb) & inside


def test_command_line_writes_index_and_one_page_per_chapter(site, root):
    """`python -m grading site --out DIR [--solutions toggle]`: DIR/index.html and DIR/<ch>/<ch>.html for each
    chapter (no other chapter pages), and the command says what it built and how to open it."""
    from grading.paths import chapters

    mode, out = site
    names = chapters(root)
    assert (out / "index.html").is_file(), f"no {out / 'index.html'}"
    pages = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.html") if not p.parent.name.startswith("_"))
    assert pages == [f"{ch}/{ch}.html" for ch in names], f"chapter pages {pages} for chapters {names}"
    printed = CLI_OUTPUT[mode]
    assert f"built {len(names)} chapter page(s) ({mode} solutions)" in printed, printed
    assert f"open {out / 'index.html'} in a browser" in printed, printed


def test_command_line_refuses_to_overwrite_a_folder_that_is_not_a_site(tmp_path):
    require_site_tools()
    (tmp_path / "notes.txt").write_text("an instructor's file\n")
    proc = grading_site("00_orientation", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not an earlier site build" in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"], "the folder was touched"


def test_index_links_every_chapter(site, root):
    from grading.paths import chapters

    mode, out = site
    index = read_page(out / "index.html")
    hrefs = {attrs.get("href", "").split("#")[0] for tag, attrs in index.tags if tag == "a"}
    for chapter in chapters(root):
        assert (out / chapter / f"{chapter}.html").is_file(), f"no page for {chapter}"
        assert f"{chapter}/{chapter}.html" in hrefs, f"index.html does not link {chapter}"
    assert "Transformer Mechanics" in "".join(index.parts)


def test_no_hidden_tests_and_solutions_as_chosen(site, chapter):
    mode, out = site
    nb = nbformat.read(solutions_notebook(chapter, ROOT), as_version=4)
    hidden, solution = region_lines(nb, hidden=True), region_lines(nb, hidden=False)
    assert hidden, f"{chapter}: no distinctive hidden-test line to look for (grading.check.secret_lines)"
    assert solution, f"{chapter}: no distinctive solution line to look for"
    page = read_page(out / chapter / f"{chapter}.html")
    shown = lines_of(page.parts)

    leaked = sorted(hidden & shown)
    assert not leaked, f"{chapter} ({mode}): hidden-test lines on the page: {leaked[:5]}"
    if mode == "omit":
        leaked = sorted(solution & shown)
        assert not leaked, f"{chapter} (omit): solution lines on the page: {leaked[:5]}"
        assert "NotImplementedError" in "".join(page.parts), f"{chapter}: the students' stubs are missing"
    else:
        # the reference answers are on the page, and only inside the collapsed <details> toggles
        assert solution & shown, f"{chapter} (toggle): no solution line on the page"
        collapsed = lines_of(page.in_details)
        outside = sorted(line for line in solution & shown if line not in collapsed)
        assert not outside, f"{chapter} (toggle): solution lines outside a toggle: {outside[:5]}"
        answers = sum(1 for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
        assert "".join(page.parts).count(SHOW_SOLUTION) == answers, f"{chapter}: one toggle per answer cell"


def test_pages_are_self_contained(site, chapter):
    """Static and offline: no widget state or CDN script, every image and stylesheet served by the site."""
    mode, out = site
    path = out / chapter / f"{chapter}.html"
    html = path.read_text(encoding="utf-8")
    assert WIDGET_VIEW not in html and "widget-state" not in html, f"{chapter}: widget data on a static page"
    reference = nbformat.read(solutions_notebook(chapter, ROOT), as_version=4)
    interacts = sum("interactive(" in o.get("data", {}).get("text/plain", "") for c in reference.cells
                    for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {}))
    assert html.count('class="tm-widget-note"') == interacts, f"{chapter}: one note per interact panel"
    page = read_page(path)
    for tag, attrs in page.tags:
        url = attrs.get("src") if tag in ("script", "img") else attrs.get("href") if tag == "link" else None
        if url is None:
            continue
        assert not re.match(r"^(https?:)?//", url), f"{chapter}: <{tag}> loads {url} from another host"
        target = (path.parent / url.split("?")[0].split("#")[0]).resolve()
        assert target.is_file(), f"{chapter}: <{tag}> refers to {url}, which the build did not write"
    # exactly the reference notebook's figures, each a cell output on the page (the browser test checks that
    # they load and are drawn)
    figures = sum("image/png" in o.get("data", {}) for c in reference.cells for o in c.get("outputs", []))
    shown = sum("image/png" in o.get("data", {}) for c in site_notebook(chapter, mode, ROOT).cells
                for o in c.get("outputs", []))
    assert shown == figures, f"{chapter} ({mode}): the site's notebook has {shown} of {figures} figure outputs"
    assert len(page.output_images) == figures, (
        f"{chapter} ({mode}): {figures} figure output(s) in solutions/, {len(page.output_images)} on the page")


def test_broken_link_or_missing_image_fails_the_build(tmp_path):
    """sphinx-build runs with -W: a chapter linking to a page or an image that does not exist is an error."""
    require_site_tools()
    from grading.paths import GradingError

    chapter = "00_orientation"
    for tree in ("solutions", "course"):
        nb = nbformat.read(ROOT / tree / chapter / f"{chapter}.ipynb", as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "markdown")
        first.source += "\n\nSee [the next chapter](no_such_chapter.ipynb) and ![a diagram](no_such_diagram.png).\n"
        (tmp_path / tree / chapter).mkdir(parents=True)
        nbformat.write(nb, tmp_path / tree / chapter / f"{chapter}.ipynb")
    out = tmp_path / "site"
    with pytest.raises(GradingError) as err:
        build_site(out, root=tmp_path, log=lambda *_: None)
    message = str(err.value)
    assert "no_such_chapter" in message and "no_such_diagram.png" in message, message
    assert not out.exists(), "a failed build must not leave a site behind"


# --------------------------------------------------------------------------- scripts/site.sh's small environment

BLOCKER = '''\
# Written by tests/test_site_build.py: what .venv-site (scripts/site.sh) does not have looks absent: its modules
# to `import` and importlib.util.find_spec (every finder answers None), its distributions (their metadata and
# entry points, e.g. Pygments plugins) to importlib.metadata.
import re
import sys

BLOCKED = frozenset({blocked!r})
HIDDEN = frozenset({hidden!r})


def _name(dist):
    return re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()


class _AsInSiteEnvironment:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self._finder.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        find = getattr(self._finder, "find_distributions", None)
        return (d for d in (find(*args, **kwargs) if find else ()) if _name(d) not in HIDDEN)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


sys.meta_path[:] = [_AsInSiteEnvironment(f) for f in sys.meta_path if hasattr(f, "find_spec")]
'''


def site_sh_requirements() -> list[str]:
    """What scripts/site.sh installs into .venv-site: its own `site_requirements` function, run."""
    script = (ROOT / "scripts" / "site.sh").read_text()
    function = re.search(r"^site_requirements\(\) \{.*?^\}$", script, re.S | re.M)
    assert function, "scripts/site.sh has no site_requirements function"
    proc = subprocess.run(["bash", "-c", f'PY="$1"\n{function.group(0)}\nsite_requirements', "bash", sys.executable],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return proc.stdout.split()


def requirement_closure(requirements: list[str]) -> set[str]:
    """The normalised names of the installed distributions REQUIREMENTS pull in, recursively."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def test_site_builds_in_site_sh_environment(tmp_path):
    """scripts/site.sh builds in .venv-site/: the site extra, nbformat and jupytext, and grading/ from the
    checkout. `python -m grading site` must work with nothing else: here every module of an installed
    distribution outside that set (torch, nbgrader, jupyterlab, numpy, companion, ...) is made unimportable,
    in the command and in the sphinx-build it starts."""
    require_site_tools()
    from importlib import metadata

    from packaging.utils import canonicalize_name

    requirements = site_sh_requirements()
    names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requirements}
    assert {"nbformat", "jupytext", "sphinx", "myst-nb", "furo"} <= names, requirements
    allowed = requirement_closure(requirements)
    hidden = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()} - allowed
    blocked = {module for module, dists in metadata.packages_distributions().items()
               if module != "grading" and not any(canonicalize_name(d) in allowed for d in dists)}
    assert {"torch", "nbgrader", "jupyterlab", "companion", "numpy"} <= blocked, sorted(blocked)[:20]
    assert {"torch", "nbgrader", "transformer-mechanics"} <= hidden, sorted(hidden)[:20]
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(blocked), hidden=sorted(hidden)))

    out = tmp_path / "html"
    env = dict(os.environ, TM_ROOT=str(ROOT),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-m", "grading", "site", "00_orientation", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        "python -m grading site needs a module scripts/site.sh's .venv-site does not install (add it to "
        "pyproject.toml's `site` extra or to site.sh's site_requirements, or import it lazily):\n" + report)
    assert (out / "index.html").is_file() and (out / "00_orientation" / "00_orientation.html").is_file(), report
