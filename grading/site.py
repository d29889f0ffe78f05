"""``python -m grading site``: the reference chapters as a static HTML site (Sphinx + myst-nb).

Nothing is executed: each chapter page shows the committed, executed outputs of
``solutions/<ch>/<ch>.ipynb`` (figures included), with the cell sources of the student release
``course/<ch>/<ch>.ipynb``, so hidden tests never reach the site (nbgrader already stripped them there).
The instructor picks what the exercises show:

``omit`` (the default)
    each answer cell shows the stub students get (``raise NotImplementedError()``) and no output.
    The site can be published while the exercises are still being graded.
``toggle``
    each answer cell holds the reference answer, collapsed behind a "Show the reference solution"
    toggle (myst-nb's ``hide-input`` cell tag: a native ``<details>`` element, no JavaScript).

Widget outputs (``application/vnd.jupyter.widget-view+json``) cannot render without a kernel: an
``interact`` panel is replaced by a one-line note, a progress bar is dropped, and the notebook's widget
state goes (every chapter draws its static figure in a plain cell before the interactive one).
Math renders with a local MathJax (the ``sphinx-mathjax-offline`` package), so the site also works
without a network; without that package Sphinx's default MathJax from a CDN is used. Opened from disk
(``file://``) it works too: only the search page's result summaries are left out there (the browser refuses
the requests that fetch them), by a few lines of JavaScript in ``_static/tm-site.js``.

The build prepares a throwaway Sphinx source folder (generated ``conf.py`` and ``index.md``, one folder per
chapter as in ``solutions/``) and runs ``sphinx-build -W``: a broken cross-reference, a missing image or any
other warning fails it.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grading.authoring import HIDDEN_BEGIN, HIDDEN_END, SOLUTION_BEGIN, SOLUTION_END
from grading.paths import GradingError, chapters as all_chapters, course_notebook, repo_root, solutions_notebook

SOLUTION_MODES = ("omit", "toggle")
DEFAULT_SOLUTIONS = "omit"
DEFAULT_OUT = "_site"
TITLE = "Transformer Mechanics"

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    '<p class="tm-widget-note"><em>Interactive widget: open this chapter in JupyterLab '
    "(<code>./scripts/lab.sh</code>) to use it.</em></p>"
)
SHOW_SOLUTION = "Show the reference solution"
HIDE_SOLUTION = "Hide the reference solution"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
# a hidden-test region that could write to a test cell's output (its text would reach the page)
_WRITES = re.compile(r"\b(print|ok|display)\s*\(")


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _strip_markers(source: str) -> str:
    """The reference answer without nbgrader's solution markers (as a student would write it)."""
    lines = [ln for ln in source.splitlines() if SOLUTION_BEGIN not in ln and SOLUTION_END not in ln]
    return "\n".join(lines)


def _hidden_part(source: str) -> str:
    inside, depth = [], 0
    for line in source.splitlines():
        if HIDDEN_BEGIN in line:
            depth += 1
        elif HIDDEN_END in line:
            depth = max(0, depth - 1)
        elif depth:
            inside.append(line)
    return "\n".join(inside)


def _widget_states(nb: NotebookNode) -> dict:
    return nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})


def _is_interact(view: dict, text: str, states: dict) -> bool:
    """An ``ipywidgets.interact`` panel (controls a reader would want to use), not a progress bar."""
    model = states.get(view.get("model_id"), {}).get("state", {})
    return "widget-interact" in model.get("_dom_classes", []) or text.startswith("interactive(")


def _static_outputs(outputs: list, states: dict) -> list:
    """Outputs a static page can show. An interact panel becomes a one-line note; other widgets (tqdm's
    progress bars) are dropped: their text/plain repr is the bar's first frame, which would mislead."""
    kept = []
    for out in outputs:
        data = out.get("data", {})
        if WIDGET_VIEW in data:
            if _is_interact(data[WIDGET_VIEW], data.get("text/plain", ""), states) and not any(
                    WIDGET_NOTE in o.get("data", {}).get("text/html", "") for o in kept):
                kept.append(nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE}))
            continue
        kept.append(out)
    return kept


def site_notebook(chapter: str, solutions: str = DEFAULT_SOLUTIONS, root: Path | None = None) -> NotebookNode:
    """The notebook a chapter's page is rendered from.

    Cell sources come from the student release (course/), outputs from the executed reference
    (solutions/); in ``toggle`` mode, answer cells take the reference source behind a toggle.
    """
    if solutions not in SOLUTION_MODES:
        raise GradingError(f"--solutions must be one of {', '.join(SOLUTION_MODES)}, not {solutions!r}")
    root = root or repo_root()
    ref_path, rel_path = solutions_notebook(chapter, root), course_notebook(chapter, root)
    if not rel_path.is_file():
        raise GradingError(f"no student release {rel_path.relative_to(root)}: run python -m grading release {chapter}")
    ref = nbformat.read(ref_path, as_version=4)
    rel = nbformat.read(rel_path, as_version=4)
    out_of_sync = GradingError(
        f"course/{chapter} is out of sync with solutions/{chapter}: run python -m grading release {chapter}"
    )
    if [c.get("id") for c in ref.cells] != [c.get("id") for c in rel.cells]:
        raise out_of_sync

    nb = copy.deepcopy(ref)
    states = _widget_states(nb)
    nb.metadata.pop("widgets", None)  # widget state: no kernel, no widget manager on a static page
    for cell, released in zip(nb.cells, rel.cells):
        if cell.cell_type != released.cell_type:
            raise out_of_sync
        meta = _nbgrader(cell)
        is_answer = bool(meta.get("solution"))
        reference_source = cell.source
        cell.source = released.source
        if cell.cell_type != "code":
            if is_answer and solutions == "toggle":
                # a written answer: the student's prompt, then the reference answer in a <details> block
                cell.source = (
                    f"{released.source}\n\n<details class=\"tm-answer\"><summary>{SHOW_SOLUTION}</summary>\n\n"
                    f"{_strip_markers(reference_source)}\n\n</details>\n"
                )
            continue
        if is_answer:
            if solutions == "omit":
                cell.outputs, cell.execution_count = [], None
            else:
                cell.source = _strip_markers(reference_source)
                tags = cell.metadata.setdefault("tags", [])
                if "hide-input" not in tags:
                    tags.append("hide-input")
                cell.metadata["mystnb"] = {"code_prompt_show": SHOW_SOLUTION, "code_prompt_hide": HIDE_SOLUTION}
        elif meta.get("grade") and _WRITES.search(_hidden_part(reference_source)):
            cell.outputs = []  # its output could carry what the hidden tests print
        cell.outputs = _static_outputs(cell.get("outputs", []), states)
    text = "\n".join(cell.source for cell in nb.cells)
    if HIDDEN_BEGIN in text or HIDDEN_END in text:
        raise out_of_sync  # a release with hidden tests in it: never publish that
    return nb


# --------------------------------------------------------------------------- the Sphinx project


def _first_heading(nb: NotebookNode, default: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return default


CONF_PY = '''\
# Generated by grading/site.py for one build; not a source file.
import importlib.util

project = {title!r}
html_title = {title!r}
author = "The Transformer Mechanics authors"
copyright = "2026, The Transformer Mechanics authors (MIT License)"
extensions = ["myst_nb", "sphinx.ext.githubpages"]
if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    extensions.append("sphinx-mathjax-offline")  # MathJax from the site itself: works offline
html_theme = {theme!r}
html_static_path = ["_static"]
html_css_files = ["tm-site.css"]
html_js_files = ["tm-site.js"]
html_favicon = "_static/tm-favicon.svg"
html_copy_source = False
html_show_sourcelink = False
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
# -W turns every other warning (a broken link or cross-reference, a missing image, bad markup) into an error;
# a skipped heading level (## then ####) only affects the page outline
suppress_warnings = ["myst.header"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True   # $$...$$ inside a paragraph, as JupyterLab renders it
myst_heading_anchors = 3
nb_execution_mode = "off"          # show the committed outputs of solutions/
nb_merge_streams = True
nb_ipywidgets_js = {{}}             # no widget manager from a CDN: widget outputs were replaced by a note
'''

FAVICON_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">
<rect width="64" height="64" rx="12" fill="#2b5797"/>
<text x="32" y="43" font-family="sans-serif" font-size="30" font-weight="bold" fill="#fff"
 text-anchor="middle">TM</text></svg>
"""

SITE_CSS = """\
/* Transformer Mechanics site: small additions to the theme */
details.hide.above-input > summary .admonition-title,
details.tm-answer > summary { cursor: pointer; font-weight: 600; }
p.tm-widget-note { color: var(--color-foreground-secondary, #555); }
"""


SITE_JS = """\
// Transformer Mechanics site. Opened from disk (file://), the browser refuses the search page's requests
// for each result's summary (cross-origin): list the results without summaries instead.
if (location.protocol === "file:" && typeof DOCUMENTATION_OPTIONS !== "undefined") {
  DOCUMENTATION_OPTIONS.SHOW_SEARCH_SUMMARY = false;
}
"""


def _index_md(pages: list[tuple[str, str]], solutions: str) -> str:
    shown = {
        "omit": "Exercise answers are omitted: each exercise shows the stub a student starts from.",
        "toggle": f"Each exercise's reference answer is collapsed: click *{SHOW_SOLUTION}* to read it.",
    }[solutions]
    toc = "\n".join(f"{doc}" for doc, _title in pages)
    return textwrap.dedent(f"""\
        # {TITLE}

        An open, autograded Jupyter course on how transformers work, from the theory side: every theorem comes
        with code you can run, measure and break.

        These pages are the reference chapters with their executed outputs and figures. {shown}
        Hidden tests are never shown. To run the code and do the exercises, open the chapters in JupyterLab
        (`./scripts/lab.sh` in a clone of the course).

        ```{{toctree}}
        :maxdepth: 1
        :caption: Chapters

        """) + toc + "\n```\n"


def prepare_source(src: Path, names: list[str], solutions: str = DEFAULT_SOLUTIONS,
                   root: Path | None = None, theme: str = "furo") -> list[tuple[str, str]]:
    """Write the Sphinx source folder SRC; return (document name, title) for each chapter."""
    root = root or repo_root()
    src.mkdir(parents=True, exist_ok=True)
    pages = []
    for chapter in names:
        nb = site_notebook(chapter, solutions, root)
        dest = src / chapter
        dest.mkdir()
        nbformat.write(nb, dest / f"{chapter}.ipynb")
        # images a chapter's markdown refers to live next to its notebook, as in solutions/
        for extra in sorted((root / "solutions" / chapter).rglob("*")):
            if extra.is_file() and extra.suffix.lower() in IMAGE_SUFFIXES and ".ipynb_checkpoints" not in extra.parts:
                target = dest / extra.relative_to(root / "solutions" / chapter)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(extra, target)
        pages.append((f"{chapter}/{chapter}", _first_heading(nb, chapter)))
    (src / "conf.py").write_text(CONF_PY.format(title=TITLE, theme=theme))
    (src / "_static").mkdir(exist_ok=True)
    (src / "_static" / "tm-site.css").write_text(SITE_CSS)
    (src / "_static" / "tm-site.js").write_text(SITE_JS)
    (src / "_static" / "tm-favicon.svg").write_text(FAVICON_SVG)
    (src / "index.md").write_text(_index_md(pages, solutions))
    return pages


SITE_MODULES = ("sphinx", "myst_nb", "furo")  # the `site` extra; sphinx-mathjax-offline is optional


def missing_site_tools() -> list[str]:
    """The modules the site build needs that are not installed (empty when it can run)."""
    return [m for m in SITE_MODULES if importlib.util.find_spec(m) is None]


def _require_sphinx() -> None:
    missing = missing_site_tools()
    if missing:
        raise GradingError(
            f"the site needs {', '.join(missing)}: pip install -e \".[site]\" (or run ./scripts/site.sh)"
        )


def _is_sphinx_output(path: Path) -> bool:
    return (path / ".buildinfo").is_file()


def build_site(out: Path | None = None, *, solutions: str = DEFAULT_SOLUTIONS, names: list[str] | None = None,
               root: Path | None = None, log=print) -> Path:
    """Build the site into OUT (default ``_site/`` at the repository root); return its index.html.

    OUT is replaced when it holds an earlier build; an OUT that holds anything else is left alone.
    """
    _require_sphinx()
    if solutions not in SOLUTION_MODES:
        raise GradingError(f"--solutions must be one of {', '.join(SOLUTION_MODES)}, not {solutions!r}")
    root = root or repo_root()
    out = Path(out) if out is not None else root / DEFAULT_OUT
    names = list(names) if names is not None else all_chapters(root)
    if not names:
        raise GradingError("no chapters under solutions/")
    if out.exists() and any(out.iterdir()) and not _is_sphinx_output(out):
        raise GradingError(f"{out} exists and is not an earlier site build: choose another --out or remove it")
    start = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    # built beside OUT and renamed into place: a failed build leaves the previous site as it was
    with tempfile.TemporaryDirectory(prefix="tm-site-") as tmp, \
            tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as staging:
        src, doctrees, html = Path(tmp) / "src", Path(tmp) / "doctrees", Path(staging) / "html"
        prepare_source(src, names, solutions, root)
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-E",
               "-d", str(doctrees), str(src), str(html)]
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            report = (proc.stdout + proc.stderr).replace(f"{src}{os.sep}", "solutions" + os.sep)
            raise GradingError(f"sphinx-build failed (exit {proc.returncode}), the site was not written:\n"
                               f"{report}".rstrip())
        if (html / "_sources").is_dir() and not any((html / "_sources").iterdir()):
            (html / "_sources").rmdir()  # html_copy_source = False leaves it empty
        if out.exists():
            shutil.rmtree(out)
        html.rename(out)
    log(f"built {len(names)} chapter page(s) ({solutions} solutions) in {time.monotonic() - start:.1f} s: {out}")
    return out / "index.html"
