"""From a chapter's jupytext source to its reference notebook (nbgrader source).

A chapter is written as a jupytext *percent* script, ``chapters/<ch>/<ch>.py``,
so that review diffs show prose and code, not JSON. Exercise cells carry two
short markers in their cell header, and :func:`source_to_notebook` turns them
into nbgrader metadata:

``# %% tags=["solution"] grade_id="softmax"``
    an autograded answer cell: the student's code goes between
    ``### BEGIN SOLUTION`` / ``### END SOLUTION``;
``# %% tags=["tests"] grade_id="test_softmax" points=3``
    its test cell (visible asserts, then ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``);
    the grade id is ``test_`` + the answer cell's id;
``# %% tags=["locked"] grade_id="setup"``
    a read-only cell nbgrader restores before grading (imports the tests rely on).

Other tags (``nbval-ignore-output``, ``nbval-skip``) pass through untouched.
The result lives outside the source tree (``solutions/<ch>/<ch>.ipynb``) and
is executed there so its outputs are committed; see :func:`build_chapter`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jupytext
import nbformat
from nbformat import NotebookNode

from grading.paths import GradingError

ROLE_TAGS = ("solution", "tests", "locked")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_VERSION_RE = re.compile(r"require_version\(\s*[\"']([0-9]+\.[0-9]+)[\"']\s*\)")
SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def _nbgrader_metadata(role: str, grade_id: str, points: float | None) -> dict:
    meta = {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3, "solution": False}
    if role == "solution":
        meta["solution"] = True
    elif role == "tests":
        meta.update(grade=True, locked=True, points=points)
    elif role == "locked":
        meta["locked"] = True
    return meta


def source_to_notebook(path: Path) -> NotebookNode:
    """Read a jupytext percent source and return the nbgrader source notebook (no outputs)."""
    nb = jupytext.read(path)
    nb.metadata.pop("jupytext", None)
    nb.metadata.setdefault("language_info", {"name": "python"})
    seen: dict[str, int] = {}
    solutions: list[str] = []
    tests: list[str] = []
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata
        meta.pop("lines_to_next_cell", None)
        tags = list(meta.pop("tags", []))
        roles = [t for t in tags if t in ROLE_TAGS]
        other = [t for t in tags if t not in ROLE_TAGS]
        grade_id = meta.pop("grade_id", None)
        points = meta.pop("points", None)
        where = f"{path.name}, cell {index + 1}"
        if len(roles) > 1:
            raise GradingError(f"{where}: a cell has one role, got tags {roles}")
        if roles:
            role = roles[0]
            if not grade_id or not _ID_RE.match(str(grade_id)):
                raise GradingError(f"{where}: a {role!r} cell needs grade_id=\"letters_digits\"; got {grade_id!r}")
            if grade_id in seen:
                raise GradingError(f"{where}: grade_id {grade_id!r} already used by cell {seen[grade_id] + 1}")
            seen[grade_id] = index
            if role == "tests":
                if not isinstance(points, (int, float)) or points <= 0:
                    raise GradingError(f"{where}: a tests cell needs points=N (N > 0); got {points!r}")
                if not grade_id.startswith("test_"):
                    raise GradingError(f"{where}: a tests cell's grade_id is 'test_' + its exercise's id; got {grade_id!r}")
                tests.append(grade_id)
            elif points is not None:
                raise GradingError(f"{where}: only tests cells carry points")
            if role == "solution":
                if cell.cell_type != "code" or SOLUTION_BEGIN not in cell.source or SOLUTION_END not in cell.source:
                    raise GradingError(f"{where}: a solution cell is code with {SOLUTION_BEGIN} ... {SOLUTION_END}")
                solutions.append(grade_id)
            meta["nbgrader"] = _nbgrader_metadata(role, grade_id, points)
        elif grade_id is not None or points is not None:
            raise GradingError(f"{where}: grade_id/points need a role tag {ROLE_TAGS}")
        if other:
            meta["tags"] = other
        cell["id"] = grade_id if roles else f"cell-{index:03d}"
    missing = [s for s in solutions if f"test_{s}" not in tests]
    orphans = [t for t in tests if t[len("test_"):] not in solutions]
    if missing:
        raise GradingError(f"{path.name}: exercise(s) without a test_<id> cell: {', '.join(missing)}")
    if orphans:
        raise GradingError(f"{path.name}: test cell(s) without their exercise cell: {', '.join(orphans)}")
    return nb


def strip_outputs(nb: NotebookNode) -> NotebookNode:
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def cells_signature(nb: NotebookNode) -> list[tuple[str, str, str]]:
    """What must agree between a source and its reference notebook: type, source, metadata."""
    return [
        (cell.cell_type, cell.source, json.dumps(cell.metadata, sort_keys=True))
        for cell in nb.cells
    ]


def required_version(nb: NotebookNode) -> str | None:
    """The companion version a chapter asks for with ``require_version("X.Y")``, if any."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            match = _VERSION_RE.search(cell.source)
            if match:
                return match.group(1)
    return None


def write_notebook(nb: NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    text = nbformat.writes(nb) + "\n"
    path.write_text(text, encoding="utf-8")
