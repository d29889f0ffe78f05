"""`python -m grading demo`, the headless main job: release, autograde and feedback on the bundled samples."""

from __future__ import annotations

import subprocess
import sys

from grading.paths import tool_env


def test_demo_prints_the_expected_table(root):
    proc = subprocess.run(
        [sys.executable, "-m", "grading", "demo"], capture_output=True, text=True, timeout=300,
        env=tool_env(TM_ROOT=str(root)),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = {line.split()[0]: line.split(None, 5) for line in proc.stdout.splitlines() if "00_orientation  " in line}
    expected = {
        "complete": ("8", "graded"),
        "blank": ("0", "graded"),
        "partly-right": ("3", "graded"),
        "broken-json": ("0", "error"),
        "infinite-loop": ("5", "graded"),
    }
    assert set(rows) == set(expected), proc.stdout
    for student, (score, status) in expected.items():
        assert (rows[student][2], rows[student][3], rows[student][4]) == (score, "8", status), rows[student]
    assert "malformed notebook" in " ".join(rows["broken-json"])
    assert "timeout" in " ".join(rows["infinite-loop"])
    assert "wrote" in proc.stdout and "5 feedback file(s)" not in proc.stdout  # broken JSON has no feedback
    assert "4 feedback file(s)" in proc.stdout
