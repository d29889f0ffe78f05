"""Autograding under attack: a mixed batch of hostile, broken and honest submissions of one chapter.

Every attack and fault in ``grading.corpus`` gets its expected status, score and CSV message; every honest
submission gets exactly the grade it gets when graded alone; no feedback shows a hidden-test line; the
sandbox keeps the kernel away from the grader's files and network (CI sets TM_SANDBOX=require).
"""

from __future__ import annotations

import csv
import html
import os
import re

import pytest

from grading import sandbox
from grading.autograde import autograde, hidden_test_lines
from grading.corpus import attack_samples, fault_samples, honest_samples, runtime_samples, write_expected

CHAPTER = "00_orientation"

pytestmark = pytest.mark.skipif(
    not sandbox.available()[0] and os.environ.get("TM_SANDBOX") != "require",
    reason=f"no sandbox here ({sandbox.available()[1]}); set TM_SANDBOX=require to fail instead",
)


@pytest.fixture(scope="module")
def corpus(root):
    return {**attack_samples(CHAPTER, root), **fault_samples(CHAPTER, root), **honest_samples(CHAPTER, root)}


@pytest.fixture(scope="module")
def batch(corpus, root, tmp_path_factory):
    src = write_expected(tmp_path_factory.mktemp("batch"), CHAPTER, corpus)
    out = tmp_path_factory.mktemp("out")
    results = autograde(src, out, jobs=2, cell_timeout=15, notebook_timeout=240, root=root, sandbox="require",
                        log=lambda *_: None)
    return {r.student: r for r in results}, out


def test_corpus_is_large_and_mixed(corpus):
    hostile = [k for k in corpus if not k.startswith("honest--")]
    assert len(hostile) >= 25 and len(corpus) >= 40, (len(hostile), len(corpus))


def test_one_row_per_submission(batch, corpus):
    results, out = batch
    with (out / "grades.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["student"] for r in rows) == sorted(corpus)
    chapters = {r["student"]: r["chapter"] for r in rows}
    assert chapters.pop("fault--stray-unknown-notebook") == "homework"  # the stray file's own row
    assert set(chapters.values()) == {CHAPTER}


@pytest.mark.parametrize("kind", ["attack", "fault", "honest"])
def test_each_submission_gets_its_expected_grade(batch, corpus, kind):
    results, _ = batch
    wrong = []
    for name, exp in corpus.items():
        if not name.startswith(kind + "--"):
            continue
        got = results[name]
        if (got.status, got.score) != (exp.status, exp.score) or exp.message.lower() not in got.message.lower():
            wrong.append(f"{name}: expected {exp.status} {exp.score:g} '{exp.message}', "
                         f"got {got.status} {got.score:g} '{got.message[:160]}'")
    assert not wrong, "\n".join(wrong)


@pytest.fixture(scope="module")
def runtime_batch(root, tmp_path_factory):
    """The run-time layers on their own: attacks the static scan would stop, graded with the scan off."""
    samples = {**runtime_samples(CHAPTER, root), "honest--complete": honest_samples(CHAPTER, root)["honest--complete"]}
    src = write_expected(tmp_path_factory.mktemp("runtime"), CHAPTER, samples)
    out = tmp_path_factory.mktemp("runtime-out")
    results = autograde(src, out, jobs=2, cell_timeout=15, notebook_timeout=240, root=root, sandbox="require",
                        log=lambda *_: None, scan=False)
    return samples, {r.student: r for r in results}


def test_runtime_layers_hold_without_the_scan(runtime_batch):
    samples, results = runtime_batch
    wrong = []
    for name, exp in samples.items():
        got = results[name]
        if (got.status, got.score) != (exp.status, exp.score) or exp.message.lower() not in got.message.lower():
            wrong.append(f"{name}: expected {exp.status} {exp.score:g} '{exp.message}', "
                         f"got {got.status} {got.score:g} '{got.message[:200]}'")
    assert not wrong, "\n".join(wrong)
    assert "run time" in results["runtime--aliased-patch"].message
    assert "without running its checks" in results["runtime--input-transformer-blanks-tests"].message


def test_honest_grades_equal_grades_alone(batch, corpus, root, tmp_path):
    results, _ = batch
    honest = {k: v for k, v in corpus.items() if k.startswith("honest--")}
    for name, exp in honest.items():
        src = write_expected(tmp_path / name / "in", CHAPTER, {name: exp})
        alone = autograde(src, tmp_path / name / "out", jobs=1, root=root, sandbox="require", log=lambda *_: None)[0]
        together = results[name]
        assert (alone.status, alone.score, alone.cells) == (together.status, together.score, together.cells), name


def test_no_feedback_shows_hidden_tests(batch, root):
    import nbformat

    from grading.paths import solutions_notebook

    results, _ = batch
    hidden = set(hidden_test_lines(nbformat.read(solutions_notebook(CHAPTER, root), as_version=4)))
    assert hidden
    for name, result in results.items():
        if result.feedback is None:
            continue
        text = html.unescape(re.sub(r"<[^>]+>", "", result.feedback.read_text(encoding="utf-8")))
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{name}: {leaked[:2]}"
    assert results["attack--history-leak"].feedback is None, "feedback of a leaking notebook must be withheld"


@pytest.mark.parametrize("name", ["fault--huge-output", "fault--one-huge-line", "fault--huge-result"])
def test_huge_output_is_cut(batch, name):
    results, _ = batch
    fb = results[name].feedback
    assert fb is not None and fb.stat().st_size < 5 * 2**20, (name, fb and fb.stat().st_size)


def test_shared_gradebook_holds_the_trusted_grades(batch):
    """DIR/gradebook.db (for formgrader) is written by the trusted side with the grades of grades.csv."""
    from nbgrader.api import Gradebook

    from grading.course import load_config

    results, out = batch
    course_id = load_config(out).CourseDirectory.course_id
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}", course_id) as gb:
        for name, result in results.items():
            if result.chapter != CHAPTER:
                continue
            submission = gb.find_submission(CHAPTER, name)
            assert float(submission.score) == result.score, (name, float(submission.score), result.score)
            attack = results["attack--aliased-monkeypatch"]
    assert attack.score < attack.max_score
