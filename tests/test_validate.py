"""`python -m grading validate`: per-exercise report, exit 1 on any failure (nbgrader's own exits 0)."""

from __future__ import annotations

import subprocess
import sys

import nbformat

from grading.paths import course_notebook, solutions_notebook, tool_env
from grading.samples import filled


def run_validate(path, root):
    return subprocess.run(
        [sys.executable, "-m", "grading", "validate", str(path)],
        capture_output=True, text=True, env=tool_env(TM_ROOT=str(root)), timeout=300,
    )


def test_reference_notebook_validates(root, chapter):
    proc = run_validate(solutions_notebook(chapter, root), root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout
    assert "PASSED  test_" in proc.stdout


def test_release_notebook_fails_validation_with_messages(root, chapter):
    proc = run_validate(course_notebook(chapter, root), root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PASSED" not in proc.stdout
    assert "NotImplementedError" in proc.stdout


def test_partial_notebook_lists_each_exercise(root, tmp_path):
    chapter = "00_orientation"
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    nb = filled(rel, sol, only=["softmax"], replace={"causal_mask": "def causal_mask(n):\n    return torch.ones(n, n).tril()"})
    path = tmp_path / f"{chapter}.ipynb"
    nbformat.write(nb, path)
    proc = run_validate(path, root)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "PASSED  test_softmax (3 points)" in lines
    assert "FAILED  test_causal_mask (0/2 points)" in lines
    assert any("expected dtype torch.bool, got torch.float32" in line for line in lines), proc.stdout
    assert "FAILED  test_random_tokens (0/3 points)" in lines
    assert "1/3 test cells passed" in proc.stdout


def test_missing_notebook_is_a_clear_error(root, tmp_path):
    proc = run_validate(tmp_path / "nope.ipynb", root)
    assert proc.returncode == 2
    assert "no such notebook" in proc.stderr
