"""The static tampering scan (grading.tamper): reference solutions scan clean, typical attacks are found.

The whole-pipeline view (a sandboxed batch of attacks and honest submissions) is tests/test_adversarial.py;
this file checks the scan on its own, fast, for every chapter.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from grading.paths import chapters, course_notebook, solutions_notebook
from grading.tamper import scan


def _read(path):
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module", params=chapters())
def notebooks(request):
    name = request.param
    return name, _read(course_notebook(name)), _read(solutions_notebook(name))


def _first_solution_cell(nb) -> int:
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))


def _with_answer(nb, source: str):
    """The notebook with its first answer cell replaced by ``source``."""
    nb = copy.deepcopy(nb)
    nb.cells[_first_solution_cell(nb)].source = source
    return nb


def test_reference_solutions_scan_clean(notebooks):
    _, release, solutions = notebooks
    assert scan(solutions, release) == []


def test_unsolved_release_scans_clean(notebooks):
    _, release, _ = notebooks
    assert scan(release, release) == []


@pytest.mark.parametrize("attack, expect", [
    ("import builtins\nbuiltins.print = len", "builtins"),
    ("get_ipython().input_transformers_post.append(lambda lines: [])", "get_ipython"),
    ("import sys\nsys.settrace(None)", "sys"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "torch"),
    ("class Yes(float):\n    def __eq__(self, other):\n        return True", "__eq__"),
    ("raise SystemExit", "SystemExit"),
    ("exec('1')", "exec"),
    ("open('grades.csv', 'w')", "open"),
    ("%load_ext autoreload", "magic"),
    ("import os\nos._exit(0)", "os"),
])
def test_attacks_are_found(notebooks, attack, expect):
    _, release, _ = notebooks
    findings = scan(_with_answer(release, attack), release)
    assert findings, f"nothing found in {attack!r}"
    assert findings[0].cell == _first_solution_cell(release)
    assert any(expect.lower() in f.what.lower() for f in findings), [f.what for f in findings]


def test_absurdly_nested_code_is_flagged_not_crashed():
    name = chapters()[0]
    release = _read(course_notebook(name))
    deep = "x = " + "-" * 50_000 + "1"  # a unary chain deeper than Python's recursion limit
    findings = scan(_with_answer(release, deep), release)
    assert any("nested too deeply" in f.what for f in findings), [f.what for f in findings]


def test_scans_in_parallel_threads_agree():
    """autograde --jobs N scans on several threads; CPython 3.11's ast.parse is not thread-safe there."""
    name = chapters()[0]
    release, solutions = _read(course_notebook(name)), _read(solutions_notebook(name))
    hostile = _with_answer(release, "import builtins\nbuiltins.len = lambda x: 0")
    jobs = [solutions, hostile] * 40
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda nb: scan(nb, release), jobs))
    assert all(r == [] for r in results[0::2])
    assert all(r and r == results[1] for r in results[1::2])
