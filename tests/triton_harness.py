"""Running Triton code under the interpreter in a fresh Python process, for the kernel tests.

``TRITON_INTERPRET=1`` must be set before Triton is imported, and other test
modules in the same pytest process may import Triton first, so every kernel
check runs in a subprocess that prints one JSON line as its last output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -c code args...`` from the repository root, with ``env`` added and TRITON_INTERPRET unset."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT_S,
    )


def last_json(proc: subprocess.CompletedProcess) -> dict:
    """The JSON object a subprocess printed last; a clear failure if it crashed."""
    assert proc.returncode == 0, f"subprocess failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interpreter_results(code: str, cases: object, has_triton: bool) -> dict:
    """Run ``code`` with ``cases`` (as JSON) under ``TRITON_INTERPRET=1``; skip when Triton is missing."""
    if not has_triton:
        pytest.skip("triton is not installed (pip install -e '.[gpu]')")
    proc = run_python(code, json.dumps(cases), TRITON_INTERPRET="1")
    out = last_json(proc)
    out["stderr"] = proc.stderr
    if not out["HAS_TRITON"]:
        pytest.skip("triton is installed but does not import in a subprocess")
    assert out["INTERPRET"], "the module did not see TRITON_INTERPRET=1 at import time"
    return out
