"""Every reference notebook executes under nbval, outputs compared, within its chapter's time budget.

nbval is pointed at one solutions notebook at a time, never at course/ (stubs raise;
PITFALLS item 17). The budget is CHAPTER_STANDARD's: 120 s on a 2-core CPU.
"""

from __future__ import annotations

import subprocess
import sys
import time

from grading.paths import solutions_notebook, tool_env

BUDGET_S = 120


def test_reference_notebook_passes_nbval_within_budget(root, chapter, tmp_path):
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
        "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(root / "tests" / "nbval_sanitize.cfg"),
        "--rootdir", str(tmp_path), str(solutions_notebook(chapter, root)),
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, timeout=BUDGET_S * 3,
        env=tool_env(TM_SCALE="full", TM_DEVICE="cpu", TM_ROOT=str(root)),
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    assert elapsed <= BUDGET_S, f"{chapter} took {elapsed:.0f} s under nbval, over its {BUDGET_S} s budget"
