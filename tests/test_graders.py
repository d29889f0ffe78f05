"""Graders are code under test. For every chapter under solutions/ (no edits needed for a new one):

* the reference notebook, submitted as a student's, scores full marks;
* the unmodified release notebook scores 0 on every grade cell;
* every listed wrong answer (chapters/<ch>/wrong_answers.py) loses its exercise's points,
  and every exercise has at least one: the first listed for each exercise is autograded through the
  whole pipeline; all of them are tried in one kernel by ``grading.variants`` (which must agree with the
  autograder on the ones both run, and must accept a copy of the reference answer, so it cannot pass by
  rejecting everything).
"""

from __future__ import annotations

import html
import re

import nbformat
import pytest

from grading.autograde import autograde
from grading.paths import course_notebook, solutions_notebook
from grading.samples import filled, solution_ids, strip_markers, wrong_answers, write_batch
from grading.variants import check_variants

COPY = "copy_of_reference"


@pytest.fixture(scope="module")
def graded(chapter, root, tmp_path_factory):
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    samples = {"reference": sol, "release": rel}
    for exercise, variants in wrong_answers(chapter, root).items():
        for name, source in list(variants.items())[:1]:
            samples[f"wrong--{exercise}--{name}"] = filled(rel, sol, replace={exercise: source.strip()})
    batch = write_batch(tmp_path_factory.mktemp("batch"), chapter, samples)
    out = tmp_path_factory.mktemp("out")
    results = autograde(batch, out, jobs=2, root=root, log=lambda *_: None)
    return {r.student: r for r in results}, sol


def test_reference_scores_full_marks(graded):
    results, _ = graded
    ref = results["reference"]
    assert ref.status == "graded", ref.message
    assert ref.max_score > 0
    lost = {k: v for k, v in ref.cells.items() if v[0] != v[1]}
    assert ref.score == ref.max_score and not lost, f"reference lost points in {lost}"


def test_release_scores_zero_everywhere(graded):
    results, _ = graded
    rel = results["release"]
    assert rel.status == "graded", rel.message
    earned = {k: v for k, v in rel.cells.items() if v[0] != 0}
    assert rel.score == 0 and not earned, f"unsolved stubs earned points in {earned}"


def test_every_exercise_has_wrong_answers(chapter, root, graded):
    _, sol = graded
    listed = wrong_answers(chapter, root)
    missing = [ex for ex in solution_ids(sol) if not listed.get(ex)]
    assert not missing, f"exercises without wrong answers in chapters/{chapter}/wrong_answers.py: {missing}"
    unknown = sorted(set(listed) - set(solution_ids(sol)))
    assert not unknown, f"wrong answers for unknown exercises: {unknown}"


def test_wrong_answers_lose_their_points(graded):
    results, _ = graded
    accepted = []
    for student, result in results.items():
        if not student.startswith("wrong--"):
            continue
        _, exercise, name = student.split("--")
        assert result.status == "graded", f"{student}: {result.message}"
        score, max_score = result.cells[f"test_{exercise}"]
        if score != 0:
            accepted.append(f"{exercise}/{name} scored {score:g}/{max_score:g}")
    assert not accepted, "graders accepted wrong answers: " + "; ".join(accepted)


@pytest.fixture(scope="module")
def in_kernel(chapter, root, graded):
    sol = graded[1]
    variants = {ex: dict(v) for ex, v in wrong_answers(chapter, root).items()}
    for cell in sol.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            variants.setdefault(meta["grade_id"], {})[COPY] = strip_markers(cell.source)
    return check_variants(chapter, root, variants)


def test_every_wrong_answer_is_rejected_in_kernel(in_kernel):
    refs = [v for v in in_kernel if v.variant in ("reference", COPY)]
    assert refs and all(v.passed for v in refs), [f"{v.exercise}/{v.variant}: {v.reason}" for v in refs if not v.passed]
    accepted = [f"{v.exercise}/{v.variant}" for v in in_kernel if v.variant not in ("reference", COPY) and v.passed]
    assert not accepted, "graders accepted wrong answers: " + "; ".join(accepted)


def test_in_kernel_check_agrees_with_autograde(graded, in_kernel):
    results, _ = graded
    verdicts = {(v.exercise, v.variant): v.passed for v in in_kernel}
    checked = 0
    for student, result in results.items():
        if student.startswith("wrong--"):
            _, exercise, name = student.split("--")
            score, _max = result.cells[f"test_{exercise}"]
            assert verdicts[(exercise, name)] == (score != 0), f"{student}: autograde {score}, in-kernel {verdicts[(exercise, name)]}"
            checked += 1
    assert checked, "no wrong answer was autograded"


def test_feedback_never_shows_hidden_tests(graded, root, chapter):
    results, sol = graded
    from grading.check import secret_lines

    hidden = {
        line.strip()
        for cell in sol.cells
        for line in cell.source.split("### BEGIN HIDDEN TESTS")[-1].split("### END HIDDEN TESTS")[0].splitlines()
        if "### BEGIN HIDDEN TESTS" in cell.source
    } & secret_lines(sol)
    assert hidden, "the chapter has hidden tests to look for"
    for student, result in results.items():
        assert result.feedback is not None and result.feedback.is_file(), f"{student}: no feedback"
        # Code is syntax-highlighted token by token: drop the tags so each source line reads as text again.
        text = html.unescape(re.sub(r"<[^>]+>", "", result.feedback.read_text(encoding="utf-8")))
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{student}'s feedback shows hidden test lines: {leaked[:3]}"
