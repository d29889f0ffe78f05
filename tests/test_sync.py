"""course/ is what solutions/ generates, solutions/ is what chapters/ says, and nothing secret leaks."""

from __future__ import annotations

import shutil

import nbformat
import pytest

from grading.authoring import source_to_notebook
from grading.check import check, leaks
from grading.paths import GradingError


def test_committed_course_is_in_sync(root):
    assert check(root, log=lambda *_: None) == []


@pytest.fixture
def copy_root(root, tmp_path):
    for part in ("solutions", "course", "chapters"):
        shutil.copytree(root / part, tmp_path / part)
    return tmp_path


def test_check_catches_a_stale_release(copy_root):
    path = copy_root / "course" / "00_orientation" / "00_orientation.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source += "\nstale"
    nbformat.write(nb, path)
    problems = check(copy_root, log=lambda *_: None)
    assert any("out of sync with solutions/" in p for p in problems), problems


def test_check_catches_a_leaked_solution(copy_root):
    path = copy_root / "course" / "00_orientation" / "00_orientation.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source += "\n    m = x.amax(dim=dim, keepdim=True)"
    nbformat.write(nb, path)
    problems = check(copy_root, log=lambda *_: None)
    assert any("solution/hidden-test line present" in p and "amax" in p for p in problems), problems


def test_check_catches_a_hidden_test_line_and_markers(root):
    sol = nbformat.read(root / "solutions" / "00_orientation" / "00_orientation.ipynb", as_version=4)
    rel = nbformat.read(root / "course" / "00_orientation" / "00_orientation.ipynb", as_version=4)
    assert leaks(sol, rel) == []
    rel.cells[0].source += '\n_state = torch.get_rng_state()\n### BEGIN HIDDEN TESTS'
    found = leaks(sol, rel)
    assert any("BEGIN HIDDEN TESTS" in p for p in found) and any("get_rng_state" in p for p in found), found


def test_check_catches_an_edited_source(copy_root):
    src = copy_root / "chapters" / "00_orientation" / "00_orientation.py"
    src.write_text(src.read_text() + "\n# %%\nprint('new cell')\n")
    problems = check(copy_root, log=lambda *_: None)
    assert any("out of sync with chapters/" in p for p in problems), problems


def test_check_catches_an_orphan_course_chapter(copy_root):
    (copy_root / "course" / "99_gone").mkdir()
    assert any("99_gone" in p for p in check(copy_root, log=lambda *_: None))


BAD_SOURCES = {
    "no grade id": ('# %% tags=["solution"]\ndef f():\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION\n', "needs grade_id"),
    "no markers": ('# %% tags=["solution"] grade_id="f"\ndef f():\n    pass\n', "BEGIN SOLUTION"),
    "no points": ('# %% tags=["tests"] grade_id="test_f"\nassert True\n', "points=N"),
    "no test cell": ('# %% tags=["solution"] grade_id="f"\n### BEGIN SOLUTION\n### END SOLUTION\n', "without a test_<id> cell"),
    "bad test id": ('# %% tags=["tests"] grade_id="check_f" points=1\nassert True\n', "'test_' +"),
    "duplicate id": ('# %% tags=["locked"] grade_id="a"\nx = 1\n\n# %% tags=["locked"] grade_id="a"\ny = 2\n', "already used"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_authoring_mistakes_are_clear_errors(case, tmp_path):
    text, words = BAD_SOURCES[case]
    path = tmp_path / "ch.py"
    path.write_text(text)
    with pytest.raises(GradingError, match=words.replace("(", r"\(").replace("+", r"\+")):
        source_to_notebook(path)


def test_markers_become_nbgrader_metadata(root):
    nb = source_to_notebook(root / "chapters" / "00_orientation" / "00_orientation.py")
    meta = {c.id: c.metadata.get("nbgrader") for c in nb.cells if "nbgrader" in c.metadata}
    assert meta["softmax"]["solution"] and not meta["softmax"]["grade"]
    assert meta["test_softmax"] == {
        "grade": True, "grade_id": "test_softmax", "locked": True, "points": 3, "schema_version": 3, "solution": False
    }
    assert meta["setup"]["locked"] and not meta["setup"]["grade"]
