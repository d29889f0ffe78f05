"""Grade one submission inside its own throwaway course root (run as a subprocess).

``python -m grading.worker COURSE_ROOT STUDENT CHAPTER CELL_TIMEOUT [IPC_PREFIX]`` runs
nbgrader's autograde and generate_feedback for that one student and writes
``COURSE_ROOT/worker.json`` with nbgrader's ``{success, error, log}`` for each
step. With IPC_PREFIX the kernel is reached over Unix sockets at that path (the sandboxed kernel has
no network; :mod:`grading.sandbox`). The parent process reads scores from the course root's own gradebook;
a crash or a kill here costs this submission only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grading.course import api


def main(argv: list[str]) -> int:
    course_root, student, chapter, cell_timeout = Path(argv[0]), argv[1], argv[2], int(argv[3])
    overrides: dict[str, object] = {"Execute.timeout": cell_timeout}
    if len(argv) > 4:
        overrides.update({
            "KernelManager.transport": "ipc",
            "KernelManager.ip": argv[4],
            "KernelManager.connection_file": argv[4] + ".json",  # beside the sockets, inside the sandbox
        })
    nbg = api(course_root, **overrides)
    report = {"autograde": nbg.autograde(chapter, student, force=True, create=True)}
    if report["autograde"].get("success"):
        report["feedback"] = nbg.generate_feedback(chapter, student, force=True)
    (course_root / "worker.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
