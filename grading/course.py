"""nbgrader course roots: configuration, the per-chapter template, release."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from grading.paths import GradingError, ensure_tool_path, repo_root

CONFIG_FILE = Path(__file__).with_name("nbgrader_config.py")
IGNORED = (".ipynb_checkpoints", "__pycache__", "*.pyc", "*.egg-info")


def load_config(course_root: Path, **overrides: object) -> Config:
    """The course's nbgrader config (read explicitly, PITFALLS item 2) rooted at ``course_root``."""
    cfg = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()
    cfg.CourseDirectory.root = str(course_root)
    cfg.Exchange.root = str(course_root / "exchange")
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return cfg


def api(course_root: Path, **overrides: object):
    """An ``NbGraderAPI`` on ``course_root`` with the course's config."""
    ensure_tool_path()
    from nbgrader.apps import NbGraderAPI

    logging.getLogger("traitlets").setLevel(logging.ERROR)
    return NbGraderAPI(config=load_config(course_root, **overrides))


def checked(result: dict, what: str) -> dict:
    """NbGraderAPI never raises; it returns ``{success, error, log}`` (PITFALLS item 2)."""
    if not result.get("success"):
        detail = (result.get("error") or "").strip() or (result.get("log") or "").strip()
        raise GradingError(f"nbgrader {what} failed:\n{detail}")
    return result


def make_template(chapter: str, workdir: Path, root: Path | None = None) -> Path:
    """A course root holding ``source/<chapter>`` and a gradebook with the chapter's grade cells.

    This is what ``nbgrader generate_assignment`` builds; every submission is
    later graded in a private copy of it, so no two students share a gradebook.
    """
    root = root or repo_root()
    src = root / "solutions" / chapter
    if not (src / f"{chapter}.ipynb").is_file():
        raise GradingError(f"no reference notebook solutions/{chapter}/{chapter}.ipynb")
    course_root = workdir / chapter
    if course_root.exists():
        shutil.rmtree(course_root)
    shutil.copytree(src, course_root / "source" / chapter, ignore=shutil.ignore_patterns(*IGNORED))
    checked(api(course_root).generate_assignment(chapter, force=True, create=True), f"generate_assignment {chapter}")
    return course_root


def release(chapters: list[str], root: Path | None = None, dest: Path | None = None) -> list[Path]:
    """Regenerate the student notebooks ``course/<chapter>/`` from ``solutions/<chapter>/``."""
    root = root or repo_root()
    dest = dest or root / "course"
    written = []
    with tempfile.TemporaryDirectory(prefix="tm-release-") as tmp:
        for chapter in chapters:
            course_root = make_template(chapter, Path(tmp), root)
            target = dest / chapter
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(course_root / "release" / chapter, target)
            written.append(target)
    return written
