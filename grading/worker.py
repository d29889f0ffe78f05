"""Grade submissions, each inside its own throwaway course root (run as a subprocess).

``python -m grading.worker --serve`` reads one JSON request per line on stdin::

    {"course_root": ..., "student": ..., "chapter": ..., "cell_timeout": 60, "ipc": PREFIX or null,
     "env": {"JUPYTER_PATH": ..., ...}}

and for each runs nbgrader's autograde and generate_feedback for that one student, writes
``COURSE_ROOT/worker.json`` with nbgrader's ``{success, error, log}`` for each step, then prints
``DONE_MARK`` on a line of its own. With ``ipc`` the kernel is reached over Unix sockets at that path (the
sandboxed kernel has no network; :mod:`grading.sandbox`).

One worker serves many submissions in turn, so nbgrader is imported once per grading slot rather than once
per student (~4 s each). The worker never runs student code (the kernel does, sandboxed), so reusing it
shares nothing between students but the imported nbgrader; a hung or crashed worker is killed and replaced
by the parent (:mod:`grading.autograde`), costing that submission only.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

DONE_MARK = "@@tm-worker-done@@"


def grade(request: dict) -> None:
    from grading.course import api

    course_root = Path(request["course_root"])
    os.environ.update(request.get("env") or {})
    overrides: dict[str, object] = {"Execute.timeout": int(request["cell_timeout"])}
    if request.get("ipc"):
        overrides.update({
            "KernelManager.transport": "ipc",
            "KernelManager.ip": request["ipc"],
            "KernelManager.connection_file": request["ipc"] + ".json",  # beside the sockets, inside the sandbox
        })
    nbg = api(course_root, **overrides)
    chapter, student = request["chapter"], request["student"]
    report = {"autograde": nbg.autograde(chapter, student, force=True, create=True)}
    if report["autograde"].get("success"):
        report["feedback"] = nbg.generate_feedback(chapter, student, force=True)
    (course_root / "worker.json").write_text(json.dumps(report))


def serve() -> int:
    import grading.course  # noqa: F401  (import nbgrader once, before the first request)
    from nbgrader.apps import NbGraderAPI  # noqa: F401

    print(DONE_MARK, flush=True)  # ready
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            grade(json.loads(line))
        except Exception:  # reported through the missing worker.json; keep serving
            traceback.print_exc()
        print(DONE_MARK, flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        raise SystemExit(serve())
    raise SystemExit("usage: python -m grading.worker --serve")
