"""Check many wrong answers against a chapter's graders in one kernel (``python -m grading variants``).

Autograding a wrong answer costs a whole nbgrader run (a kernel, the chapter's cells, a gradebook, the
feedback). To check dozens of variants per exercise, this module runs the reference notebook once, cell by
cell, in one kernel at grading scale, and at each exercise's test cell:

1. runs the test cell as it stands (the reference must pass);
2. for each wrong variant: deletes the names the reference answer cell defines (so a variant that fails to
   define them cannot fall back on the reference), runs the variant in its place, re-runs the code cells
   between the answer cell and the test cell, then runs the test cell and records whether nbgrader would
   give it points (no error, nothing on stderr);
3. restores the reference answer and those cells before going on.

So each variant's test cell sees what it would see when autograded: every earlier exercise solved and the
variant in place. ``tests/test_graders.py`` still autogrades one variant per exercise through the real
pipeline, and checks that both agree on it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode

from grading.paths import ensure_tool_path, solutions_notebook, tool_env
from grading.samples import strip_markers, wrong_answers


@dataclass(frozen=True)
class Verdict:
    exercise: str
    variant: str  # "reference" for the reference answer
    passed: bool  # the test cell would earn its points
    reason: str  # the error's last line, "stderr: ..." or ""


def _meta(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def defined_names(source: str) -> list[str]:
    """Top-level names an answer cell binds (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.extend((a.asname or a.name).split(".")[0] for a in node.names)
    return list(dict.fromkeys(names))


def _outcome(cell: NotebookNode) -> tuple[bool, str]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return False, f"{out.get('ename')}: {out.get('evalue', '')}".strip()[:300]
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return False, "stderr: " + out.get("text", "").strip()[:300]
    return True, ""


def check_variants(
    chapter: str,
    root: Path | None = None,
    variants: dict[str, dict[str, str]] | None = None,
    *,
    cell_timeout: int = 60,
) -> list[Verdict]:
    """Run the chapter once with every wrong variant tried at its test cell; one verdict per (exercise, variant),
    the reference's included."""
    path = solutions_notebook(chapter, root)
    nb = nbformat.read(path, as_version=4)
    variants = wrong_answers(chapter, root) if variants is None else variants
    ensure_tool_path()
    client = NotebookClient(
        nb,
        timeout=cell_timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    verdicts: list[Verdict] = []

    def run(source: str) -> tuple[bool, str]:
        cell = nbformat.v4.new_code_cell(source)
        client.execute_cell(cell, 0, store_history=False)
        return _outcome(cell)

    with client.setup_kernel(env=tool_env(TM_SCALE="reduced", TM_DEVICE="cpu")):
        answers: dict[str, int] = {}
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            meta = _meta(cell)
            if meta.get("solution"):
                cell.source = strip_markers(cell.source)
                answers[meta["grade_id"]] = index
            if not (meta.get("grade") and str(meta.get("grade_id", "")).startswith("test_")):
                run(cell.source)
                continue
            exercise = meta["grade_id"][len("test_") :]
            verdicts.append(Verdict(exercise, "reference", *run(cell.source)))
            if exercise not in answers:
                continue
            start = answers[exercise]
            answer = nb.cells[start].source
            between = [c.source for c in nb.cells[start + 1 : index] if c.cell_type == "code"]
            names = defined_names(answer)
            for name, source in variants.get(exercise, {}).items():
                if names:
                    run("\n".join(f"globals().pop({n!r}, None)" for n in names))
                run(source.strip())
                for code in between:
                    run(code)
                verdicts.append(Verdict(exercise, name, *run(cell.source)))
                run(answer)
                for code in between:
                    run(code)
    return verdicts


def report(verdicts: list[Verdict]) -> tuple[list[str], list[str]]:
    """(problems, lines): a problem is a reference that fails or a wrong variant that passes."""
    problems, lines = [], []
    for v in verdicts:
        wrong = v.variant != "reference"
        bad = v.passed == wrong
        status = ("ACCEPTED (grader misses it)" if wrong else "ok") if v.passed else ("rejected" if wrong else "FAILS")
        line = f"{v.exercise:<24} {v.variant:<32} {status}" + (f"  [{v.reason}]" if v.reason and (bad or wrong) else "")
        lines.append(line)
        if bad:
            problems.append(line.strip())
    return problems, lines
