"""``python -m grading check``: is ``course/`` exactly what ``solutions/`` generates, and free of answers?"""

from __future__ import annotations

import filecmp
import tempfile
from pathlib import Path

import nbformat

from companion import __version__
from grading.authoring import (
    HIDDEN_BEGIN,
    HIDDEN_END,
    SOLUTION_BEGIN,
    SOLUTION_END,
    cells_signature,
    required_version,
    source_to_notebook,
    strip_outputs,
)
from grading.course import release
from grading.paths import chapter_source, chapters, repo_root

# A line shorter than this (after stripping) is too generic to count as leaked ("return x").
MIN_LEAK_LINE = 16


def split_secret(source: str) -> tuple[list[str], list[str]]:
    """A cell's lines inside solution or hidden-test regions, and the lines outside them (markers dropped)."""
    inside, outside, depth = [], [], 0
    for line in source.splitlines():
        if SOLUTION_BEGIN in line or HIDDEN_BEGIN in line:
            depth += 1
        elif SOLUTION_END in line or HIDDEN_END in line:
            depth = max(0, depth - 1)
        else:
            (inside if depth else outside).append(line)
    return inside, outside


def secret_lines(nb) -> set[str]:
    """Distinctive lines of solution and hidden-test regions that appear nowhere outside such regions."""
    secret, public = set(), set()
    for cell in nb.cells:
        inside, outside = split_secret(cell.source)
        secret.update(line.strip() for line in inside)
        public.update(line.strip() for line in outside)
    return {line for line in secret - public if len(line) >= MIN_LEAK_LINE and not line.startswith("#")}


def leaks(solution_nb, release_nb) -> list[str]:
    problems = []
    text = "\n".join(cell.source for cell in release_nb.cells)
    for marker in (SOLUTION_BEGIN, SOLUTION_END, HIDDEN_BEGIN, HIDDEN_END):
        if marker in text:
            problems.append(f"marker {marker!r} present")
    released_lines = {line.strip() for line in text.splitlines()}
    for line in sorted(secret_lines(solution_nb) & released_lines):
        problems.append(f"solution/hidden-test line present: {line!r}")
    for cell in release_nb.cells:
        if cell.cell_type == "code" and cell.get("outputs"):
            problems.append("a code cell carries outputs (hidden test results or solutions could show there)")
            break
    return problems


def _tree_diff(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on either side, or different bytes)."""
    cmp = filecmp.dircmp(a, b, ignore=[".ipynb_checkpoints", "__pycache__"])
    out = [f"only in generated: {n}" for n in cmp.left_only] + [f"only in course/: {n}" for n in cmp.right_only]
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    out += [f"differs: {n}" for n in mismatch + errors]
    for sub in cmp.common_dirs:
        out += [f"{sub}/{p}" for p in _tree_diff(a / sub, b / sub)]
    return out


def check(root: Path | None = None, *, log=print) -> list[str]:
    """Return every problem found (empty when all is well)."""
    root = root or repo_root()
    problems: list[str] = []
    names = chapters(root)
    course = root / "course"
    for extra in sorted(p.name for p in course.iterdir() if p.is_dir()) if course.is_dir() else []:
        if extra not in names:
            problems.append(f"course/{extra}: no matching solutions/{extra}")
    with tempfile.TemporaryDirectory(prefix="tm-check-") as tmp:
        generated = Path(tmp) / "course"
        release(names, root, dest=generated)
        for chapter in names:
            log(f"checking {chapter}")
            here = course / chapter
            if not here.is_dir():
                problems.append(f"course/{chapter}: missing (run python -m grading release)")
                continue
            for diff in _tree_diff(generated / chapter, here):
                problems.append(f"course/{chapter}: out of sync with solutions/ ({diff}); run python -m grading release")
            sol = nbformat.read(root / "solutions" / chapter / f"{chapter}.ipynb", as_version=4)
            for nb_path in sorted(here.glob("*.ipynb")):
                for leak in leaks(sol, nbformat.read(nb_path, as_version=4)):
                    problems.append(f"course/{chapter}/{nb_path.name}: {leak}")
            src = chapter_source(chapter, root)
            if src.is_file() and cells_signature(source_to_notebook(src)) != cells_signature(strip_outputs(sol)):
                problems.append(
                    f"solutions/{chapter}: out of sync with {src.relative_to(root)}; run python -m grading build {chapter}"
                )
            wanted = required_version(sol)
            if wanted is None:
                problems.append(f"solutions/{chapter}: no require_version(...) call in the notebook")
            elif wanted.split(".") != __version__.split(".")[:2]:
                problems.append(f"solutions/{chapter}: requires companion {wanted}, package is {__version__}")
    return problems
