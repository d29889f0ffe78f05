"""The batch's shared nbgrader gradebook, written once, by the trusted side, from the grades it computed.

Each submission is graded in a throwaway course root with a private gradebook that the student's kernel
never sees (:mod:`grading.autograde`). After the batch, this module copies every chapter's assignment (its
notebooks, grade, solution and source cells) from those templates into ``DIR/gradebook.db`` and records each
student's scores there: the scores in ``grades.csv``, after the tampering checks, not whatever the kernel
reported. ``nbgrader formgrader`` or the Gradebook API can then read it (for manual review, say). Running
autograde again on the same ``DIR`` updates the students it grades and keeps the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grading.autograde import Result


def _copy_assignment(src, dst, chapter: str) -> None:
    assignment = src.find_assignment(chapter)
    dst.update_or_create_assignment(chapter)
    for nb in assignment.notebooks:
        dst.update_or_create_notebook(nb.name, chapter)
        for cell in nb.source_cells:
            dst.update_or_create_source_cell(cell.name, nb.name, chapter, cell_type=cell.cell_type,
                                             locked=cell.locked, source=cell.source, checksum=cell.checksum)
        for cell in nb.grade_cells:
            dst.update_or_create_grade_cell(cell.name, nb.name, chapter, max_score=cell.max_score,
                                            cell_type=cell.cell_type)
        for cell in nb.solution_cells:
            dst.update_or_create_solution_cell(cell.name, nb.name, chapter)
        for cell in nb.task_cells:
            dst.update_or_create_task_cell(cell.name, nb.name, chapter, max_score=cell.max_score,
                                           cell_type=cell.cell_type)


def write_gradebook(path: Path, results: list["Result"], templates: dict[str, Path], course_id: str) -> None:
    """Record ``results`` in the gradebook at ``path`` (created if missing). ``templates``: chapter -> the
    template course root whose gradebook holds that chapter's assignment."""
    import warnings

    from nbgrader.api import Gradebook, MissingEntry

    with warnings.catch_warnings():
        # nbgrader's add_submission trips SQLAlchemy's "not in session" autoflush warning; the rows are written
        warnings.filterwarnings("ignore", message=".*not in session.*")
        _write(path, results, templates, course_id, Gradebook, MissingEntry)


def _write(path, results, templates, course_id, Gradebook, MissingEntry) -> None:
    with Gradebook(f"sqlite:///{path}", course_id) as dst:
        for chapter, course_root in sorted(templates.items()):
            with Gradebook(f"sqlite:///{course_root / 'gradebook.db'}", course_id) as src:
                _copy_assignment(src, dst, chapter)
        for result in sorted(results, key=lambda r: (r.student, r.chapter)):
            if result.chapter not in templates:
                continue  # an unknown chapter: its row in grades.csv says so
            dst.update_or_create_student(result.student)
            dst.update_or_create_submission(result.chapter, result.student)
            notebook = result.chapter
            for cell in dst.find_assignment(result.chapter).notebooks[0].grade_cells:
                try:
                    grade = dst.find_grade(cell.name, notebook, result.chapter, result.student)
                except MissingEntry:
                    continue
                grade.auto_score = result.cells.get(cell.name, (0.0, cell.max_score))[0]
                grade.manual_score = None  # a previous run's manual score would win over the new grade
                grade.needs_manual_grade = False
            dst.db.commit()
