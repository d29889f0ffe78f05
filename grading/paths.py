"""Where things live: the repository root, its chapters, the student and reference notebooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT_ENV = "TM_ROOT"


class GradingError(Exception):
    """A problem the instructor can fix (bad path, unknown chapter): reported in one line, exit 2."""


def repo_root() -> Path:
    """The course repository: ``$TM_ROOT`` or the checkout this package was installed from (editable)."""
    env = os.environ.get(ROOT_ENV)
    root = Path(env) if env else Path(__file__).resolve().parent.parent
    if not (root / "solutions").is_dir():
        raise GradingError(
            f"no solutions/ folder under {root}: run from a clone of the course "
            f"(pip install -e .) or set {ROOT_ENV} to the clone's path"
        )
    return root


def chapters(root: Path | None = None) -> list[str]:
    """Chapter names, in order: every ``solutions/<name>/<name>.ipynb``."""
    root = root or repo_root()
    return sorted(p.name for p in (root / "solutions").iterdir() if (p / f"{p.name}.ipynb").is_file())


def resolve_chapters(names: list[str] | None, root: Path | None = None) -> list[str]:
    known = chapters(root)
    if not names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GradingError(f"unknown chapter(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(names)


def solutions_notebook(chapter: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "solutions" / chapter / f"{chapter}.ipynb"


def course_notebook(chapter: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "course" / chapter / f"{chapter}.ipynb"


def chapter_source(chapter: str, root: Path | None = None) -> Path:
    """The jupytext percent source a chapter is authored in."""
    return (root or repo_root()) / "chapters" / chapter / f"{chapter}.py"


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's ``bin/`` first on PATH.

    nbgrader shells out to ``alembic`` when it creates a gradebook, and kernels
    named ``python3`` must resolve to this environment (PITFALLS item 4).
    """
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def ensure_tool_path() -> None:
    """Put this interpreter's ``bin/`` first on PATH for in-process nbgrader calls."""
    bindir = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, *parts])
