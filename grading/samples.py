"""Sample submissions made from a chapter's own notebooks (for the demo and the tests).

Samples are derived from the current ``solutions/`` and release notebooks, never
stored copies, so they cannot go stale when a chapter changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grading.paths import course_notebook, solutions_notebook


def _gid(cell: NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solution_ids(solutions_nb: NotebookNode) -> list[str]:
    return [_gid(c) for c in solutions_nb.cells if c.metadata.get("nbgrader", {}).get("solution")]


def strip_markers(source: str) -> str:
    """A solution cell's code as a student would have typed it (no ### markers)."""
    keep = [line for line in source.splitlines() if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line]
    return "\n".join(keep)


def filled(
    release_nb: NotebookNode,
    solutions_nb: NotebookNode,
    only: list[str] | None = None,
    replace: dict[str, str] | None = None,
) -> NotebookNode:
    """The release notebook with answer cells filled from the solutions (all, or ``only`` these),
    and any answer cell in ``replace`` given that source instead."""
    answers = {_gid(c): strip_markers(c.source) for c in solutions_nb.cells if _gid(c)}
    replace = replace or {}
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        gid = _gid(cell)
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        if gid in replace:
            cell.source = replace[gid]
        elif only is None or gid in only:
            cell.source = answers[gid]
    return nb


def _first_index(nb: NotebookNode, pred: Callable[[NotebookNode], bool]) -> int:
    return next(i for i, c in enumerate(nb.cells) if pred(c))


def is_test(cell: NotebookNode) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


def make_samples(chapter: str, root: Path | None = None) -> dict[str, NotebookNode | bytes | None]:
    """Named sample submissions: a notebook, raw bytes (broken files) or None (no notebook)."""
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    ids = solution_ids(sol)
    complete = filled(rel, sol)
    samples: dict[str, NotebookNode | bytes | None] = {
        "complete": complete,
        "blank": copy.deepcopy(rel),
        "partly-right": filled(rel, sol, only=ids[:1]),
        "broken-json": nbformat.writes(complete).encode()[: len(nbformat.writes(complete)) // 2],
        "infinite-loop": filled(rel, sol, replace={ids[0]: "while True:\n    pass"}),
    }
    return samples


def robustness_samples(chapter: str, root: Path | None = None) -> dict[str, NotebookNode | bytes | None]:
    """Faults a batch must survive, each beside honest work."""
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    ids = solution_ids(sol)
    complete = filled(rel, sol)
    first_test = _first_index(complete, is_test)

    duplicated = copy.deepcopy(complete)
    copied = copy.deepcopy(complete.cells[first_test])
    copied["id"] = f"{copied.get('id', 'cell')}-copy"  # JupyterLab gives a pasted cell a new id
    duplicated.cells.append(copied)
    deleted = copy.deepcopy(complete)
    del deleted.cells[first_test]
    edited = filled(rel, sol, replace={ids[0]: "def broken(*args, **kwargs):\n    return None"})
    edit_at = _first_index(edited, is_test)
    edited.cells[edit_at].source = "pass  # tests removed by the student"
    exits = filled(rel, sol, replace={ids[0]: "import os\nos._exit(1)"})
    return {
        "malformed-json": b'{"cells": [ {"cell_type": "code", ',
        "missing-notebook": None,
        "duplicated-test-cell": duplicated,
        "deleted-test-cell": deleted,
        "edited-test-cell": edited,
        "infinite-loop": filled(rel, sol, replace={ids[0]: "while True:\n    pass"}),
        "os-exit": exits,
    }


def write_batch(dest: Path, chapter: str, samples: dict[str, NotebookNode | bytes | None]) -> Path:
    """Lay samples out as ``dest/<student>/<chapter>/<chapter>.ipynb``."""
    for student, sample in samples.items():
        folder = dest / student / chapter
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{chapter}.ipynb"
        if sample is None:
            (folder / "notes.txt").write_text("forgot the notebook\n")
        elif isinstance(sample, bytes):
            path.write_bytes(sample)
        else:
            nbformat.write(sample, path)
    return dest


def wrong_answers(chapter: str, root: Path | None = None) -> dict[str, dict[str, str]]:
    """``chapters/<ch>/wrong_answers.py``'s ``WRONG_ANSWERS``: answer-cell id -> {name: wrong cell source}."""
    import runpy

    from grading.paths import GradingError, repo_root

    path = (root or repo_root()) / "chapters" / chapter / "wrong_answers.py"
    if not path.is_file():
        raise GradingError(f"{path}: missing; every chapter lists wrong answers its graders must reject")
    return runpy.run_path(str(path))["WRONG_ANSWERS"]
