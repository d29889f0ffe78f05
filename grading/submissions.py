"""Finding and reading submissions: ``<student>/<chapter>/<chapter>.ipynb`` folders or a zip of them."""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grading.paths import GradingError

MAX_NOTEBOOK_BYTES = 50 * 2**20


@dataclass
class Submission:
    student: str
    chapter: str
    folder: Path  # <root>/<student>/<chapter>, or <root>/<student> for a stray notebook
    stray: str = ""  # a notebook lying directly in the student's folder (its file name)


@dataclass
class Prepared:
    """A submission read and repaired for grading, or the reason it cannot be graded."""

    notebook: NotebookNode | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a zip, refusing members that would land outside ``dest``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise GradingError(f"{archive.name}: member {member.filename!r} points outside the archive")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise GradingError(f"{archive}: not a readable zip file ({exc})") from None
    return dest


def find_root(path: Path, known: list[str]) -> Path:
    """The folder whose children are students and grandchildren chapters.

    Accepts the layout itself, nbgrader's ``submitted/`` inside a course root,
    or a zip whose single top folder wraps either.
    """
    candidates = [path, path / "submitted"]
    for child in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        candidates += [child, child / "submitted"]
    for folder in candidates:
        if not folder.is_dir():
            continue
        for student in folder.iterdir():
            if student.is_dir() and any((student / chapter).is_dir() for chapter in known):
                return folder
    raise GradingError(
        f"{path}: no <student>/<chapter>/ folders found (chapters: {', '.join(known)}); "
        "expected the layout <student>/<chapter>/<chapter>.ipynb"
    )


def discover(root: Path, known: list[str]) -> list[Submission]:
    """Every (student, chapter) folder under ``root``, sorted; unknown chapter folders included.

    A notebook lying directly in a student's folder (``alice/03_icl.ipynb``) is a submission too, so it gets
    its row: of that chapter when its name is a chapter's and the chapter folder is missing, otherwise an
    error row named after the file."""
    found = []
    for student in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        folders = {p.name for p in student.iterdir() if p.is_dir() and not p.name.startswith(".")}
        for chapter in sorted(folders):
            found.append(Submission(student.name, chapter, student / chapter))
        for nb in sorted(p for p in student.iterdir() if p.is_file() and p.suffix == ".ipynb"):
            if nb.stem not in folders:
                found.append(Submission(student.name, nb.stem, student, stray=nb.name))
    return found


def _locked_cells(nb: NotebookNode) -> dict[str, NotebookNode]:
    return {
        cell.metadata.nbgrader["grade_id"]: cell
        for cell in nb.cells
        if cell.metadata.get("nbgrader", {}).get("locked") or cell.metadata.get("nbgrader", {}).get("grade")
    }


def _grade_id(cell: NotebookNode) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if isinstance(meta, dict) else None


def prepare(sub: Submission, release_nb: NotebookNode) -> Prepared:
    """Read the student's notebook; report what nbgrader would silently repair or choke on."""
    expected = f"{sub.chapter}.ipynb"
    path = sub.folder / expected
    notes: list[str] = []
    if sub.stray:
        notes.append(f"graded {sub.stray!r} found outside its chapter folder {sub.chapter}/")
    elif not path.is_file():
        others = sorted(p.name for p in sub.folder.glob("*.ipynb"))
        if len(others) == 1:
            notes.append(f"graded {others[0]!r} submitted in place of {expected!r}")
            path = sub.folder / others[0]
        elif others:
            return Prepared(error=f"missing notebook {expected}; found {', '.join(others)} (rename one)")
        else:
            return Prepared(error=f"missing notebook {expected}")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return Prepared(error=f"notebook is {path.stat().st_size / 2**20:.0f} MiB, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Prepared(error=f"malformed notebook: not UTF-8 text (byte {exc.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Prepared(error=f"malformed notebook: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})")
    try:
        if not isinstance(data, dict) or data.get("nbformat") != 4:
            raise ValueError(f"nbformat {data.get('nbformat') if isinstance(data, dict) else '?'} (need 4)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several types; all mean "not a notebook we can grade"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Prepared(error=f"malformed notebook: {reason[:200]}")

    # Duplicated grade ids: keep the last copy's metadata, as nbgrader's DeduplicateIds means to.
    # Its own repair leaves `nbgrader: {}` behind, which then crashes OverwriteCells (PITFALLS item 7),
    # so the earlier copies become plain cells here.
    counts: dict[str, int] = {}
    for cell in reversed(nb.cells):
        gid = _grade_id(cell)
        if gid:
            counts[gid] = counts.get(gid, 0) + 1
            if counts[gid] > 1:
                del cell.metadata["nbgrader"]
    for gid, n in sorted(counts.items()):
        if n > 1:
            notes.append(f"cell {gid} appears {n} times; graded the last copy")
    # Test and locked cells: nbgrader restores them from the source; report what it will restore.
    submitted = {}
    for cell in nb.cells:
        gid = _grade_id(cell)
        if gid:
            submitted[gid] = cell
    for gid, original in _locked_cells(release_nb).items():
        if gid not in submitted:
            notes.append(f"cell {gid} was deleted (restored)")
        elif submitted[gid].cell_type != original.cell_type:
            notes.append(f"cell {gid} changed type (restored)")
        elif submitted[gid].source.strip() != original.source.strip():
            notes.append(f"cell {gid} was edited (restored)")
    return Prepared(notebook=nb, notes=notes)
