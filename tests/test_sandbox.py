"""The sandbox itself: what a kernel started through it can and cannot see or do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from grading import sandbox

pytestmark = pytest.mark.skipif(
    not sandbox.available()[0] and os.environ.get("TM_SANDBOX") != "require",
    reason=f"no sandbox here ({sandbox.available()[1]}); set TM_SANDBOX=require to fail instead",
)

PROBE = r"""
import json, os, socket
out = {"uid": os.getuid(), "cwd": os.getcwd(), "env": sorted(os.environ)}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); out["net"] = "open"
except OSError as e:
    out["net"] = type(e).__name__
for name, path in {"repo": os.environ["PROBE_REPO"], "secret": os.environ["PROBE_SECRET"]}.items():
    out[name] = os.path.exists(path)
try:
    open(os.environ["PROBE_DATA"], "a").write("x"); out["data_writable"] = True
except OSError:
    out["data_writable"] = False
open("mine.txt", "w").write("ok"); out["scratch_writable"] = True
n = 0
try:
    while n < 2000:
        pid = os.fork()
        if pid == 0:
            import time; time.sleep(2); os._exit(0)
        n += 1
except OSError:
    pass
out["forks"] = n
import torch, companion
out["torch"] = torch.__version__
print(json.dumps(out))
"""


def test_kernel_sees_only_its_scratch(tmp_path, root):
    secret = tmp_path / "gradebook.db"
    secret.write_text("grades")
    data = tmp_path / "data.csv"
    data.write_text("1,2\n")
    box = sandbox.Sandbox(tmp_path / "box" / "scratch", tmp_path / "box" / "runtime", uid=sandbox.FIRST_UID + 7,
                          limits=sandbox.Limits(processes=64),
                          env={"PROBE_REPO": str(root / "solutions"), "PROBE_SECRET": str(secret),
                               "PROBE_DATA": str(tmp_path / "box" / "scratch" / "data.csv")})
    sandbox.prepare(box, [data])
    proc = subprocess.run(sandbox.kernel_argv(box, [sys.executable, "-c", PROBE]), capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SECRET_TOKEN": "hunter2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    _assert_confined(json.loads(proc.stdout.strip().splitlines()[-1]), sandbox.FIRST_UID + 7, forks_limited=True)


def _assert_confined(got: dict, uid: int, *, forks_limited: bool) -> None:
    """What PROBE reported from inside the sandbox is what a confined kernel sees."""
    assert got["uid"] == uid
    assert got["net"] != "open"
    assert not got["repo"] and not got["secret"], "the kernel can see the grader's files"
    assert not got["data_writable"], "chapter data files must be read-only"
    assert got["scratch_writable"]
    assert "SECRET_TOKEN" not in got["env"] and not any(k.startswith("NBGRADER") for k in got["env"])
    if forks_limited:
        assert got["forks"] < 64, f"{got['forks']} forks: the process limit did not hold"
    assert got["torch"]


def _open_to_others(path) -> bool:
    """Every folder from / down to ``path`` can be entered by any user (so `nobody` can run this Python)."""
    import stat
    from pathlib import Path

    path = Path(path).resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


@pytest.mark.skipif(not sandbox.is_root(), reason="as an ordinary user the test above runs the rootless sandbox")
def test_rootless_sandbox(root):
    """Instructors are rarely root: the same probe through bubblewrap's user namespace (``rootless``). Started
    by `nobody` where this Python is open to other users; otherwise by root with the rootless command line,
    where everything but the process limit (root is exempt from RLIMIT_NPROC) is checked."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    nobody = 65534
    as_nobody = _open_to_others(sys.base_prefix) and _open_to_others(sys.prefix) and _open_to_others(root)
    base = Path(tempfile.mkdtemp(prefix="tm-rootless-", dir="/tmp"))  # /tmp/pytest-of-root is closed to nobody
    try:
        base.chmod(0o755)
        secret = base / "gradebook.db"
        secret.write_text("grades")
        data = base / "data.csv"
        data.write_text("1,2\n")
        box = sandbox.Sandbox(base / "box" / "scratch", base / "box" / "runtime", uid=sandbox.FIRST_UID + 9,
                              limits=sandbox.Limits(processes=64), rootless=True,
                              env={"PROBE_REPO": str(root / "solutions"), "PROBE_SECRET": str(secret),
                                   "PROBE_DATA": str(base / "box" / "scratch" / "data.csv")})
        sandbox.prepare(box, [data])
        argv = sandbox.kernel_argv(box, [sys.executable, "-c", PROBE])
        assert "--unshare-user" in argv and "--reuid" not in " ".join(argv)
        if as_nobody:
            for path in [base / "box", *(base / "box").rglob("*")]:
                os.chown(path, nobody, nobody)
            argv = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/",
                              env={**os.environ, "SECRET_TOKEN": "hunter2"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        _assert_confined(json.loads(proc.stdout.strip().splitlines()[-1]), sandbox.FIRST_UID + 9,
                         forks_limited=as_nobody)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_concurrent_runs_get_their_own_uids():
    assert sandbox.run_uids(2) >= sandbox.FIRST_UID
    assert sandbox.run_uids(2) + 2 <= 2**31 - 1


def test_unknown_mode_is_refused(tmp_path):
    from grading.autograde import autograde
    from grading.paths import GradingError

    (tmp_path / "in").mkdir()
    with pytest.raises(GradingError, match="--sandbox"):
        autograde(tmp_path / "in", tmp_path / "out", sandbox="sometimes")


def test_a_hung_submission_costs_only_itself(root, tmp_path):
    """The notebook limit kills the slot's worker and kernel; the next submission on that slot still grades."""
    from grading.autograde import autograde
    from grading.corpus import fault_samples, honest_samples, write_expected

    samples = {"a-hangs": fault_samples("00_orientation", root)["fault--infinite-loop"],
               "b-honest": honest_samples("00_orientation", root)["honest--complete"]}
    src = write_expected(tmp_path / "in", "00_orientation", samples)
    results = {r.student: r for r in autograde(src, tmp_path / "out", jobs=1, cell_timeout=600, notebook_timeout=25,
                                                root=root, log=lambda *_: None)}
    assert results["a-hangs"].status == "error" and "notebook limit" in results["a-hangs"].message
    assert (results["b-honest"].status, results["b-honest"].score) == ("graded", results["b-honest"].max_score)
