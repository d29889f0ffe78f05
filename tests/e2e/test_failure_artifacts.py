"""The failure artifacts of the browser tests: a failed e2e test leaves a PNG of its page, and the run says where.

An inner pytest session (a subprocess: Playwright's sync API runs once per process) uses tests/e2e/conftest.py
as it is, with a `page` fixture on a local HTML page instead of JupyterLab, and three tests: one passes, one
fails, and one whose fixture takes a screenshot and then fails (as the orientation fixture does).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from jupyterlab_harness import require_browser_stack  # tests/e2e is on sys.path under pytest's default import mode

pytestmark = [pytest.mark.e2e]

E2E = Path(__file__).resolve().parent

INNER_TESTS = '''
import pytest
from jupyterlab_harness import new_page, save_screenshot

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(chromium):
    page = new_page(chromium)
    page.set_content("<h1 style='color: #c00'>the page of a test</h1>")
    yield page
    page.context.close()


@pytest.fixture
def broken(chromium):
    page = new_page(chromium)
    page.set_content("<p>a fixture that fails</p>")
    save_screenshot(page, "broken-fixture")
    page.context.close()
    raise RuntimeError("the fixture failed after its screenshot")


def test_passes(page):
    assert page.locator("h1").inner_text() == "the page of a test"


def test_fails(page):
    assert page.locator("h1").inner_text() == "another heading"


def test_fixture_fails(broken):
    pass
'''


def block(out: str, title: str) -> str:
    """The lines under pytest's `___ TITLE ___` (a failure) or `=== TITLE ===` (a summary section) header,
    up to the next header."""
    lines = out.splitlines()
    header = re.compile(rf"^(_+|=+) {re.escape(title)} (_+|=+)$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    assert start is not None, f"no {title!r} section in the output:\n{out}"
    end = next((j for j in range(start + 1, len(lines)) if re.match(r"^(_{3,} .+ _{3,}|={3,}.*)$", lines[j])),
               len(lines))
    return "\n".join(lines[start + 1:end])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_failed_test_leaves_screenshot_and_report_names_it(tmp_path):
    require_browser_stack("the e2e failure-artifact test")
    inner = tmp_path / "inner"
    inner.mkdir()
    shutil.copy(E2E / "conftest.py", inner / "conftest.py")
    (inner / "test_inner.py").write_text(INNER_TESTS)
    artifacts = tmp_path / "artifacts"
    env = dict(os.environ, TM_E2E_ARTIFACTS=str(artifacts), TM_E2E_REQUIRE="1",
               PYTHONPATH=os.pathsep.join([str(E2E), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly",
         "--rootdir", str(inner), "-q", "-rA", str(inner)],
        cwd=inner, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert re.search(r"\b1 failed, 1 passed, 1 error\b", out), out

    pngs = sorted(artifacts.glob("*.png"))
    names = [p.name for p in pngs]
    assert len(pngs) == 2, f"expected the failed test's and the fixture's screenshots, got {names}\n{out}"
    failed = next((p for p in pngs if "test_fails-call" in p.name), None)
    assert failed is not None, names
    assert not [n for n in names if "test_passes" in n], "a passing test left a screenshot"
    width, height = png_size(failed)
    assert width >= 1000 and height >= 500, (width, height)  # the page at the harness's 1400x1000 viewport
    fixture_png = artifacts / "broken-fixture.png"
    assert fixture_png.is_file() and min(png_size(fixture_png)) > 0

    # named with each failure, and again in the summary at the end of the run
    failure = block(out, "test_fails")
    assert "e2e failure artifacts" in failure and str(failed) in failure, failure
    error = block(out, "ERROR at setup of test_fixture_fails")
    assert "e2e failure artifacts" in error and str(fixture_png) in error, error
    assert str(failed) not in error
    summary = block(out, "e2e failure artifacts")
    assert f"test_inner.py::test_fails: {failed}" in summary, summary
    assert f"test_inner.py::test_fixture_fails: {fixture_png}" in summary, summary
    assert "test_passes" not in summary, summary
