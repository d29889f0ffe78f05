"""``python -m grading autograde``: grade a batch, one isolated course root per submission.

For every ``<student>/<chapter>/`` folder:

1. read and check the notebook on the trusted side (:func:`grading.submissions.prepare`):
   missing, misnamed, non-UTF-8, malformed JSON; note test cells that were
   edited, deleted or duplicated (nbgrader restores them);
2. copy the chapter's template course root (source + gradebook from
   ``generate_assignment``) into a private folder with only this submission;
3. run nbgrader's autograde and generate_feedback there in a subprocess with a
   wall-clock limit (:mod:`grading.worker`), so a hung or crashing notebook
   costs that student only; the kernel runs in a sandbox (:mod:`grading.sandbox`) that sees
   neither that course root nor anything else of the grader's;
4. read the scores from that private gradebook and write one CSV row.

No submission can stop the batch; the tool exits non-zero only when it
itself fails (bad arguments, a broken chapter).
"""

from __future__ import annotations

import csv
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grading import sandbox as sbx
from grading import tamper
from grading.course import load_config, make_template
from grading.paths import GradingError, chapters, repo_root, tool_env
from grading.submissions import Prepared, Submission, discover, find_root, prepare, safe_extract

CSV_COLUMNS = ["student", "chapter", "score", "max_score", "status", "message"]
DEFAULT_CELL_TIMEOUT = 60
DEFAULT_NOTEBOOK_TIMEOUT = 600


@dataclass
class Result:
    student: str
    chapter: str
    score: float
    max_score: float
    status: str  # "graded" or "error"
    message: str
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)
    feedback: Path | None = None

    def row(self) -> dict[str, str]:
        return {
            "student": self.student,
            "chapter": self.chapter,
            "score": f"{self.score:g}",
            "max_score": f"{self.max_score:g}",
            "status": self.status,
            "message": self.message,
        }


@dataclass
class Template:
    root: Path
    release_nb: nbformat.NotebookNode
    max_score: float
    secrets: dict[str, str] = field(default_factory=dict)  # hidden-test line -> its test cell's grade id
    checks: dict[str, int] = field(default_factory=dict)  # test cell -> passed checks it prints when solved

    def data_files(self) -> list[Path]:
        """The chapter's files other than its notebook (nbgrader hands them to students and the grader)."""
        folder = self.root / "source" / self.root.name
        return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix != ".ipynb"]


@dataclass
class SandboxPolicy:
    """How kernels are confined: ``mode`` is "require" (refuse to grade without the sandbox), "auto"
    (sandbox when available, else warn and grade unconfined) or "off"."""

    mode: str = "auto"
    limits: sbx.Limits = field(default_factory=sbx.Limits)
    mpl_cache: Path | None = None
    enabled: bool = False
    first_uid: int = sbx.FIRST_UID


def _max_score(course_root: Path, chapter: str) -> float:
    from nbgrader.api import Gradebook

    cfg = load_config(course_root)
    with Gradebook(f"sqlite:///{course_root / 'gradebook.db'}", cfg.CourseDirectory.course_id) as gb:
        return float(gb.find_assignment(chapter).max_score)


def build_templates(names: list[str], workdir: Path, root: Path) -> dict[str, Template]:
    templates = {}
    for chapter in names:
        course_root = make_template(chapter, workdir, root)
        release_nb = nbformat.read(course_root / "release" / chapter / f"{chapter}.ipynb", as_version=4)
        source_nb = nbformat.read(course_root / "source" / chapter / f"{chapter}.ipynb", as_version=4)
        templates[chapter] = Template(course_root, release_nb, _max_score(course_root, chapter),
                                      hidden_test_lines(source_nb), passed_checks(source_nb))
    return templates


CHECK_MARK = "\u2713"  # companion.testing.ok() starts each passed check's line with it
TRUNCATED = "... Output truncated ..."  # nbgrader's LimitOutput


def _stream_lines(cell: nbformat.NotebookNode) -> list[str]:
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return text.splitlines()


def passed_checks(source_nb: nbformat.NotebookNode) -> dict[str, int]:
    """Test cell grade id -> how many passed-check lines (``ok()``) it printed in the executed reference."""
    out = {}
    for cell in source_nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and meta.get("grade_id"):
            out[meta["grade_id"]] = sum(line.startswith(CHECK_MARK) for line in _stream_lines(cell))
    return out


def _unfinished_tests(autograded: Path, result: "Result", expected: dict[str, int]) -> list[tuple[str, int, int]]:
    """Test cells that earned points without printing all the passed checks they print when they run in
    full: (grade id, printed, expected). A test cell that was blanked or cut short (an input transformer,
    an AST transformer, a patched run_cell) runs without error, which nbgrader scores as passed."""
    nb = nbformat.read(autograded, as_version=4)
    short = []
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or gid not in expected or not expected[gid]:
            continue
        if result.cells.get(gid, (0, 0))[0] == 0:
            continue
        lines = _stream_lines(cell)
        if any(line.startswith(TRUNCATED) for line in lines):
            continue  # nbgrader cut the output: the count cannot be read (the scans still apply)
        printed = sum(line.startswith(CHECK_MARK) for line in lines)
        if printed < expected[gid]:
            short.append((gid, printed, expected[gid]))
    return short


def hidden_test_lines(source_nb: nbformat.NotebookNode) -> dict[str, str]:
    """Hidden-test line -> the grade id of its test cell (lines also found outside hidden tests left out)."""
    from grading.check import MIN_LEAK_LINE, split_secret

    owner: dict[str, str] = {}
    public: set[str] = set()
    for cell in source_nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        inside, outside = split_secret(cell.source) if "### BEGIN HIDDEN TESTS" in cell.source else ([], cell.source.splitlines())
        public.update(line.strip() for line in outside)
        for line in inside:
            if meta.get("grade") and len(line.strip()) >= MIN_LEAK_LINE and not line.strip().startswith("#"):
                owner.setdefault(line.strip(), meta.get("grade_id", ""))
    return {line: gid for line, gid in owner.items() if line not in public}


def _html_text(path: Path) -> str:
    import html
    import re

    # code is highlighted token by token: drop the tags so each source line reads as text again
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8", errors="replace")))


def _zero(result: "Result", tests: list[str]) -> list[str]:
    """Take the points of ``tests`` away from ``result``; the ones that had points."""
    took = []
    for gid in tests:
        if gid in result.cells and result.cells[gid][0] != 0:
            result.cells[gid] = (0.0, result.cells[gid][1])
            took.append(gid)
    result.score = sum(score for score, _ in result.cells.values())
    return took


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (kernels start their own session, so killpg misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _scores(course_root: Path, chapter: str, student: str) -> tuple[float, dict[str, tuple[float, float]]]:
    from nbgrader.api import Gradebook

    cfg = load_config(course_root)
    with Gradebook(f"sqlite:///{course_root / 'gradebook.db'}", cfg.CourseDirectory.course_id) as gb:
        submission = gb.find_submission(chapter, student)
        cells = {
            grade.name: (float(grade.score), float(grade.max_score))
            for notebook in submission.notebooks
            for grade in notebook.grades
        }
        return float(submission.score), cells


def _execution_notes(autograded: Path, cell_timeout: int) -> list[str]:
    notes = []
    nb = nbformat.read(autograded, as_version=4)
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "CellTimeoutError":
                gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                where = f"cell {gid}" if gid else f"cell {index + 1}"
                notes.append(f"timeout: {where} ran over the {cell_timeout} s cell limit and was interrupted")
    return notes


def _runtime_tampering(autograded: Path) -> list[tuple[str, str]]:
    """(grade id, message) of the test cells where companion.testing's run-time check caught tampering."""
    from companion.testing import TAMPERING_MARK

    nb = nbformat.read(autograded, as_version=4)
    caught = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "TamperingDetected" \
                    and TAMPERING_MARK in output.get("evalue", ""):
                caught.append((meta.get("grade_id", "?"), output["evalue"][:300]))
                break
    return caught


def _tests_from(autograded: Path, grade_id: str) -> list[str]:
    """Grade ids of the test cells from ``grade_id`` on, in the order the graded notebook ran them."""
    nb = nbformat.read(autograded, as_version=4)
    ids = [c.metadata.nbgrader["grade_id"] for c in nb.cells
           if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    return ids[ids.index(grade_id):] if grade_id in ids else ids


class Worker:
    """A ``python -m grading.worker --serve`` process grading one submission at a time for one slot.

    Started on first use; killed (with its kernels) when a submission runs over its time limit or the
    worker dies, and started afresh for the next one."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = tool_env(TM_SCALE="reduced", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grading.worker", "--serve"], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        ready, _ = self._wait(120)
        if not ready:
            self.close()
            raise RuntimeError("the grading worker did not start")

    def _wait(self, timeout: float) -> tuple[bool, str]:
        """Read the worker's output until its DONE mark; (finished, output)."""
        import selectors

        from grading.worker import DONE_MARK

        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        mark = (DONE_MARK + "\n").encode()
        buffer = b""
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while mark not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, buffer.decode("utf-8", "replace")
                if not sel.select(timeout=min(left, 1.0)):
                    if self.proc.poll() is not None:
                        return False, buffer.decode("utf-8", "replace")
                    continue
                data = os.read(fd, 65536)
                if not data:  # the worker exited
                    return False, buffer.decode("utf-8", "replace")
                buffer = (buffer + data)[-65536:]  # the tail is enough: a noisy kernel must not fill memory
        return True, buffer.decode("utf-8", "replace")

    def run(self, request: dict, timeout: float) -> tuple[bool, str]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return False, "the grading worker exited"
        finished, output = self._wait(timeout)
        if not finished:
            self.close()
        return finished, output

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None or _descendants(self.proc.pid):
            _kill_tree(self.proc)
        self.proc = None


def grade_one(
    sub: Submission,
    template: Template | None,
    workdir: Path,
    out: Path,
    *,
    cell_timeout: int = DEFAULT_CELL_TIMEOUT,
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT,
    policy: SandboxPolicy | None = None,
    slot: int = 0,
    worker: "Worker | None" = None,
    scan: bool = True,
) -> Result:
    """Grade one submission; never raises for anything the submission did."""
    if template is None:
        if sub.stray:
            return Result(sub.student, sub.chapter, 0, 0, "error",
                          f"notebook {sub.stray!r} is not in a chapter folder and its name is no chapter's "
                          "(expected <student>/<chapter>/<chapter>.ipynb)")
        return Result(sub.student, sub.chapter, 0, 0, "error", f"unknown chapter {sub.chapter!r}")

    findings: list[tamper.Finding] = []

    def error(message: str, notes: list[str] = ()) -> Result:
        if findings:
            notes = [*notes, "tampering: " + "; ".join(str(f) for f in findings[:2])]
        return Result(sub.student, sub.chapter, 0, template.max_score, "error", "; ".join([message, *notes]))

    prepared: Prepared = prepare(sub, template.release_nb)
    if prepared.error:
        return error(prepared.error)
    findings = tamper.scan(prepared.notebook, template.release_nb) if scan else []
    course_root = workdir / f"{sub.student}--{sub.chapter}"
    shutil.copytree(template.root, course_root, ignore=shutil.ignore_patterns("release", "exchange"))
    target = course_root / "submitted" / sub.student / sub.chapter / f"{sub.chapter}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(prepared.notebook, target)

    request = {
        "course_root": str(course_root), "student": sub.student, "chapter": sub.chapter,
        "cell_timeout": cell_timeout, "ipc": None, "env": {},
    }
    if policy is not None and policy.enabled:
        box_dir = workdir / f"{sub.student}--{sub.chapter}.sandbox"
        # Unix socket paths are limited to 107 bytes: the kernel's sockets live in a short folder of their own
        runtime = Path(tempfile.mkdtemp(prefix="tm-ipc-", dir="/tmp" if Path("/tmp").is_dir() else None))
        box = sbx.Sandbox(
            scratch=box_dir / "scratch",
            runtime=runtime,
            uid=policy.first_uid + slot,
            limits=policy.limits,
            env={"TM_SCALE": "reduced", "TM_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"},
            # the run-time integrity check records the kernel's state before any cell runs
            startup=["import companion.testing"],
        )
        sbx.prepare(box, template.data_files(), policy.mpl_cache)
        sbx.write_kernelspec(box, box_dir / "jupyter")
        request["env"] = {"JUPYTER_PATH": str(box_dir / "jupyter"), "JUPYTER_RUNTIME_DIR": str(box.runtime)}
        request["ipc"] = str(box.runtime / "k")
    worker = worker or Worker()
    try:
        finished, output = worker.run(request, notebook_timeout)
    finally:
        if request["ipc"]:
            shutil.rmtree(Path(request["ipc"]).parent, ignore_errors=True)
    if not finished:
        return error(f"timeout: grading ran over the {notebook_timeout} s notebook limit", prepared.notes)
    report_path = course_root / "worker.json"
    if not report_path.is_file():
        tail = [line for line in output.strip().splitlines() if line.strip()][-1:]
        return error(f"grader process failed: {' '.join(tail)[:200]}".strip(), prepared.notes)
    report = json.loads(report_path.read_text())
    auto = report["autograde"]
    autograded = course_root / "autograded" / sub.student / sub.chapter / f"{sub.chapter}.ipynb"
    log = (auto.get("log") or "") + (auto.get("error") or "")
    if not autograded.is_file():
        if "DeadKernelError" in log or "Kernel died" in log or "kernel died" in log.lower():
            reason = "kernel died while running the notebook (os._exit, a crash or out of memory)"
        else:
            last = [line for line in log.strip().splitlines() if line.strip()][-1:] or ["no log"]
            reason = f"nbgrader could not grade the notebook: {last[0][:200]}"
        return error(reason, prepared.notes)
    score, cells = _scores(course_root, sub.chapter, sub.student)
    notes = prepared.notes + _execution_notes(autograded, cell_timeout)
    result = Result(sub.student, sub.chapter, score, template.max_score, "graded", "", cells)
    if findings:
        took = _zero(result, tamper.affected_tests(prepared.notebook, findings[0].cell, template.release_nb))
        shown = "; ".join(str(f) for f in findings[:2]) + (f" (+{len(findings) - 2} more)" if len(findings) > 2 else "")
        notes.append(f"tampering: {shown}; scored 0: {', '.join(took) or 'nothing it had earned'}")
    short = _unfinished_tests(autograded, result, template.checks)
    if short:
        gid, printed, expected = short[0]
        took = _zero(result, _tests_from(autograded, gid))
        notes.append(f"tampering: test cell {gid} earned points without running its checks ({printed} of {expected} "
                     f"passed checks printed); scored 0: {', '.join(took) or 'nothing it had earned'}")
    caught = _runtime_tampering(autograded)
    if caught:
        first, message = caught[0]
        took = _zero(result, _tests_from(autograded, first))
        notes.append(f"tampering: {message} (in {first}); scored 0: {', '.join(took) or 'nothing it had earned'}")
    feedback = course_root / "feedback" / sub.student / sub.chapter / f"{sub.chapter}.html"
    own = "\n".join(c.source for c in prepared.notebook.cells if c.cell_type == "code")
    leaked = tamper.leaked_lines(_html_text(feedback), set(template.secrets), own) if feedback.is_file() else []
    if leaked:
        took = _zero(result, sorted({template.secrets[line] for line in leaked}))
        notes.append(
            f"tampering: the notebook's outputs show {len(leaked)} hidden test line(s); feedback withheld; "
            f"scored 0: {', '.join(took) or 'nothing it had earned'}"
        )
        feedback.unlink()
    result.message = "; ".join(notes)
    if feedback.is_file():
        dest = out / "feedback" / sub.student / f"{sub.chapter}.html"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(feedback, dest)
        result.feedback = dest
    elif report.get("feedback") is not None and not leaked:
        result.message = "; ".join([*notes, "feedback could not be generated"])
    return result


def autograde(
    submissions: Path,
    out: Path,
    *,
    jobs: int = 1,
    cell_timeout: int = DEFAULT_CELL_TIMEOUT,
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT,
    root: Path | None = None,
    keep: Path | None = None,
    sandbox: str | None = None,
    limits: sbx.Limits | None = None,
    log=print,
    scan: bool = True,
) -> list[Result]:
    """Grade every submission under ``submissions`` (folder or zip); write ``out/grades.csv`` and feedback.

    ``sandbox``: "require", "auto" or "off" (see :class:`SandboxPolicy`; default: ``$TM_SANDBOX`` or "auto";
    the command line's default is "require"). ``scan=False`` skips the static tampering scan, so tests can
    check that the run-time layers hold on their own (the command line always scans)."""
    root = root or repo_root()
    sandbox = sandbox or os.environ.get("TM_SANDBOX", "auto")
    if sandbox not in ("require", "auto", "off"):
        raise GradingError(f"--sandbox must be require, auto or off, not {sandbox!r}")
    policy = SandboxPolicy(mode=sandbox, limits=limits or sbx.Limits(cpu_seconds=notebook_timeout))
    if sandbox != "off":
        usable, why = sbx.available()
        if not usable and sandbox == "require":
            raise GradingError(
                f"cannot sandbox the kernels: {why}. Student code would run as you, with your files and network; "
                "install bubblewrap (apt-get install bubblewrap), or pass --sandbox auto/off to grade unconfined "
                "at your own risk")
        if not usable:
            log(f"WARNING: grading WITHOUT a sandbox ({why}): student code runs as you, with your files")
        policy.enabled = usable
    policy.first_uid = sbx.run_uids(max(1, jobs))
    if not submissions.exists():
        raise GradingError(f"{submissions}: no such file or folder")
    known = chapters(root)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tm-grade-") as tmp:
        tmp_path = Path(keep) if keep else Path(tmp)
        tmp_path.mkdir(parents=True, exist_ok=True)
        if submissions.is_file():
            base = find_root(safe_extract(submissions, tmp_path / "unzipped"), known)
        else:
            base = find_root(submissions, known)
        subs = discover(base, known)
        needed = sorted({s.chapter for s in subs if s.chapter in known})
        log(f"grading {len(subs)} submission(s) of {', '.join(needed) or 'no known chapter'} with {jobs} job(s)")
        templates = build_templates(needed, tmp_path / "templates", root)
        work = tmp_path / "work"
        work.mkdir()
        if policy.enabled:
            policy.mpl_cache = sbx.build_mpl_cache(tmp_path / "mpl-cache")
        slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        workers = [Worker() for _ in range(max(1, jobs))]
        for n in range(max(1, jobs)):
            slots.put(n)
        partial = CsvLog(out / "grades.csv")  # each row as it is graded: a crash of ours loses no finished grade

        def run(sub: Submission) -> Result:
            start = time.perf_counter()
            slot = slots.get()
            try:
                result = grade_one(
                    sub, templates.get(sub.chapter), work, out,
                    cell_timeout=cell_timeout, notebook_timeout=notebook_timeout, policy=policy, slot=slot,
                    worker=workers[slot], scan=scan,
                )
            except Exception as exc:  # a bug of ours on one submission must not lose the others
                max_score = templates[sub.chapter].max_score if sub.chapter in templates else 0
                result = Result(sub.student, sub.chapter, 0, max_score, "error", f"internal grader error: {exc!r}"[:300])
            finally:
                slots.put(slot)
            partial.add(result)
            log(f"  {sub.student}/{sub.chapter}: {result.status} {result.score:g}/{result.max_score:g} "
                f"({time.perf_counter() - start:.1f} s){' - ' + result.message if result.message else ''}")
            return result

        try:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                results = list(pool.map(run, subs))
        finally:
            for worker in workers:
                worker.close()
        write_csv(results, out / "grades.csv")
        _write_shared_gradebook(out / "gradebook.db", results, templates, log)
    return results


def _write_shared_gradebook(path: Path, results: list[Result], templates: dict[str, Template], log) -> None:
    from grading.gradebook import write_gradebook

    if not templates:
        return
    course_id = load_config(next(iter(templates.values())).root).CourseDirectory.course_id
    try:
        write_gradebook(path, results, {chapter: t.root for chapter, t in templates.items()}, course_id)
    except Exception as exc:  # grades.csv is written already: report, do not lose the batch
        log(f"WARNING: could not write the gradebook {path}: {exc!r}")


class CsvLog:
    """``grades.csv`` written by one writer as results come in (unsorted), rewritten sorted at the end."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.lock = threading.Lock()
        with path.open("w", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=CSV_COLUMNS).writeheader()

    def add(self, result: "Result") -> None:
        with self.lock, self.path.open("a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=CSV_COLUMNS).writerow(result.row())


def write_csv(results: list[Result], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in sorted(results, key=lambda r: (r.student, r.chapter)):
            writer.writerow(result.row())


def format_table(results: list[Result]) -> str:
    rows = [CSV_COLUMNS] + [list(r.row().values()) for r in sorted(results, key=lambda r: (r.student, r.chapter))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(CSV_COLUMNS) - 1)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)
