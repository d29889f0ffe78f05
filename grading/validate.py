"""``python -m grading validate NOTEBOOK``: run a notebook as the grader will and list each exercise.

Wraps ``nbgrader.validator.Validator`` (nbgrader's own ``validate`` command
exits 0 even when tests fail; PITFALLS item 3). Prints one line per test cell,
passed or failed with the error, and exits 1 if any failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader import utils
from nbgrader.validator import Validator

from grading.course import load_config
from grading.paths import GradingError, ensure_tool_path


@dataclass
class CellResult:
    grade_id: str
    score: float
    max_score: float
    error: str


def validate(path: Path, *, cell_timeout: int = 120) -> list[CellResult]:
    if not path.is_file():
        raise GradingError(f"{path}: no such notebook")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise GradingError(f"{path}: not a readable notebook ({exc})") from None
    ensure_tool_path()
    cfg = load_config(path.parent, **{"Execute.timeout": cell_timeout})
    validator = Validator(config=cfg)
    os.environ["TM_SCALE"] = "reduced"
    cwd = Path.cwd()
    os.chdir(path.parent)
    try:
        executed = validator._preprocess(nb)  # Validator.validate only keeps sources; we want grade ids
    finally:
        os.chdir(cwd)
    results = []
    for cell in executed.cells:
        if not utils.is_grade(cell) or cell.cell_type != "code":
            continue
        score, max_score = utils.determine_grade(cell)
        error = validator._extract_error(cell) if score is None or score < max_score else ""
        results.append(CellResult(cell.metadata.nbgrader["grade_id"], float(score or 0), max_score, error.strip()))
    return results


def report(path: Path, results: list[CellResult], *, out=print) -> bool:
    if not results:
        out(f"{path}: no graded test cells found")
        return True
    total = sum(r.score for r in results)
    best = sum(r.max_score for r in results)
    for r in results:
        if r.score >= r.max_score:
            out(f"PASSED  {r.grade_id} ({r.max_score:g} points)")
        else:
            out(f"FAILED  {r.grade_id} ({r.score:g}/{r.max_score:g} points)")
            for line in r.error.splitlines()[-6:]:
                out(f"        {line}")
    passed = sum(r.score >= r.max_score for r in results)
    out(f"{passed}/{len(results)} test cells passed, {total:g}/{best:g} points from the visible tests "
        "(hidden tests run only when the notebook is graded)")
    return passed == len(results)
