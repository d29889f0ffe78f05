"""One batch holding every fault the issue names, beside honest work: each fault gets its own row
with a clear reason, and every honest submission gets exactly the grade it gets alone."""

from __future__ import annotations

import csv
import zipfile

import nbformat
import pytest

from grading.autograde import CSV_COLUMNS, autograde
from grading.paths import GradingError, course_notebook, solutions_notebook
from grading.samples import filled, robustness_samples, write_batch

CHAPTER = "00_orientation"


@pytest.fixture(scope="module")
def batch(root, tmp_path_factory):
    sol = nbformat.read(solutions_notebook(CHAPTER, root), as_version=4)
    rel = nbformat.read(course_notebook(CHAPTER, root), as_version=4)
    samples = {"honest-complete": filled(rel, sol), "honest-partial": filled(rel, sol, only=["softmax"])}
    samples.update(robustness_samples(CHAPTER, root))
    folder = write_batch(tmp_path_factory.mktemp("submitted"), CHAPTER, samples)
    out = tmp_path_factory.mktemp("graded")
    results = autograde(folder, out, jobs=2, cell_timeout=15, notebook_timeout=180, root=root, log=lambda *_: None)
    return {r.student: r for r in results}, out, folder


EXPECTED = {
    # student: (status, score, words the message must contain)
    "honest-complete": ("graded", 8, ""),
    "honest-partial": ("graded", 3, ""),
    "malformed-json": ("error", 0, "malformed notebook: invalid JSON"),
    "missing-notebook": ("error", 0, "missing notebook 00_orientation.ipynb"),
    "duplicated-test-cell": ("graded", 8, "test_softmax appears 2 times"),
    "deleted-test-cell": ("graded", 8, "test_softmax was deleted (restored)"),
    "edited-test-cell": ("graded", 5, "test_softmax was edited (restored)"),
    "infinite-loop": ("graded", 5, "timeout: cell softmax ran over the 15 s cell limit"),
    "os-exit": ("error", 0, "kernel died"),
}


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_each_submission_gets_its_row(batch, student):
    results, _, _ = batch
    status, score, words = EXPECTED[student]
    result = results[student]
    assert (result.status, result.score, result.max_score) == (status, score, 8), result
    assert words in result.message, result.message


def test_csv_has_one_row_per_submission(batch):
    results, out, _ = batch
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    assert sorted(r["student"] for r in rows) == sorted(EXPECTED)
    assert all(r["chapter"] == CHAPTER and r["max_score"] == "8" for r in rows)
    assert all("\n" not in r["message"] for r in rows)


def test_zip_of_the_batch_grades_the_same(batch, root, tmp_path):
    results, _, folder = batch
    archive = tmp_path / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.parent.parent.name in ("honest-complete", "malformed-json"):
                zf.write(path, "submitted/" + str(path.relative_to(folder)))
    zipped = {r.student: r for r in autograde(archive, tmp_path / "out", jobs=1, root=root, log=lambda *_: None)}
    assert sorted(zipped) == ["honest-complete", "malformed-json"]
    for student, result in zipped.items():
        assert (result.status, result.score) == (results[student].status, results[student].score)


def test_zip_with_escaping_member_is_refused(root, tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.ipynb", "{}")
    with pytest.raises(GradingError, match="outside the archive"):
        autograde(archive, tmp_path / "out", root=root, log=lambda *_: None)
    assert not (tmp_path / "outside.ipynb").exists()


def test_missing_submissions_path_is_a_clear_error(root, tmp_path):
    with pytest.raises(GradingError, match="no such file or folder"):
        autograde(tmp_path / "nope", tmp_path / "out", root=root, log=lambda *_: None)
