"""``python -m grading build``: chapter source -> executed reference notebook -> student release."""

from __future__ import annotations

import time
from pathlib import Path

from nbclient import NotebookClient

from grading.authoring import source_to_notebook, write_notebook
from grading.course import release
from grading.paths import GradingError, chapter_source, ensure_tool_path, repo_root, solutions_notebook, tool_env


def execute(nb, cwd: Path, *, cell_timeout: int = 600, **env: str):
    """Run every cell of ``nb`` in a fresh ``python3`` kernel started in ``cwd`` with ``env`` added to its
    environment (this process's own is left alone); return it with outputs."""
    ensure_tool_path()
    client = NotebookClient(
        nb, timeout=cell_timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env=tool_env(**env))
    return nb


def build_chapter(chapter: str, root: Path | None = None, *, log=print) -> float:
    """Regenerate ``solutions/<ch>/<ch>.ipynb`` (executed at full scale on the CPU); return seconds taken."""
    root = root or repo_root()
    src = chapter_source(chapter, root)
    if not src.is_file():
        raise GradingError(f"no chapter source {src.relative_to(root)}")
    target = solutions_notebook(chapter, root)
    nb = source_to_notebook(src)
    start = time.perf_counter()
    log(f"executing {chapter} ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    execute(nb, target.parent, TM_SCALE="full", TM_DEVICE="cpu")
    seconds = time.perf_counter() - start
    write_notebook(nb, target)
    log(f"wrote {target.relative_to(root)} ({seconds:.1f} s)")
    return seconds


def build(chapters: list[str], root: Path | None = None, *, log=print) -> None:
    root = root or repo_root()
    for chapter in chapters:
        build_chapter(chapter, root, log=log)
    for path in release(chapters, root):
        log(f"released {path.relative_to(root)}")


def source_chapters(root: Path) -> list[str]:
    base = root / "chapters"
    return sorted(p.name for p in base.iterdir() if (p / f"{p.name}.py").is_file()) if base.is_dir() else []
