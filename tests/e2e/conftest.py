"""Fixtures for the browser end-to-end tests: `lab_server` (a student's jupyter lab, started by scripts/lab.sh
on a throwaway copy of course/), `chromium`/`browser` (headless Debian Chromium through Playwright), `page`
(a fresh tab), and the failure artifacts: a screenshot of the page of every failed test and the server log,
named in that test's report and listed again at the end of the run ("e2e failure artifacts").
The machinery is in jupyterlab_harness.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jupyterlab_harness import (  # tests/e2e is on sys.path under pytest's default import mode
    ARTIFACTS,
    CHROMIUM_ARGS,
    PENDING_ARTIFACTS,
    artifact_path,
    new_page,
    pristine_env_config,
    require_browser_stack,
    save_screenshot,
    start_lab_server,
)

ARTIFACT_SECTION = "e2e failure artifacts"  # the report section naming the files a failed test left
ARTIFACT_PROPERTY = "e2e_artifacts"  # the same paths in report.user_properties (xdist carries them over)
_FAILED: list[str] = []
_REPORTED: list[tuple[str, str]] = []  # (nodeid, path) of every artifact reported, for the terminal summary


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end test in headless Chromium (tests/e2e)")
    # pytest-xdist registers it; without xdist (-p no:xdist) it would warn as unknown
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup group")


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    require_browser_stack()  # no point starting a server nobody can look at
    with pristine_env_config():
        server = start_lab_server(tmp_path_factory.mktemp("lab"))
        try:
            yield server
        finally:
            server.shutdown_kernels()
            server.stop()
            if _FAILED and server.log_path.exists():  # the whole log, where the failures' reports said
                shutil.copy(server.log_path, artifact_path("jupyter-server", ".log"))


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the whole session (JupyterLab and site tests alike).

    Playwright's sync API allows one running instance per thread: a second `sync_playwright().start()`
    fails with "Sync API inside the asyncio loop", so every browser test shares this one.
    """
    exe = require_browser_stack("browser e2e tests")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
    except Exception:
        pw.stop()
        raise
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture(scope="session")
def browser(lab_server, chromium):
    return chromium


@pytest.fixture
def page(browser, lab_server):
    """A fresh browser tab; the kernels it started are shut down afterwards."""
    kernels_before = lab_server.kernel_ids()
    page = new_page(browser)
    yield page
    page.context.close()
    lab_server.shutdown_kernels(keep=kernels_before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed e2e test: screenshot its page (a `page`-like fixture, or a fixture holding `.page`), copy the
    server log, and name both (and any screenshot a fixture took, e.g. before its setup failed) in the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed or "e2e" not in item.keywords:
        return
    _FAILED.append(item.nodeid)
    funcargs = getattr(item, "funcargs", {})
    for value in funcargs.values():
        page = getattr(value, "page", value)
        if type(page).__name__ == "Page" and not page.is_closed():
            save_screenshot(page, f"{item.nodeid}-{report.when}")
            break
    server = funcargs.get("lab_server")  # the test's fixtures include it (directly or through another)
    if server is not None:
        report.sections.append(("jupyter server log (tail)", server.log_tail()))
        if server.log_path.exists():  # the log so far; the whole of it replaces this copy at the end
            PENDING_ARTIFACTS.append(Path(shutil.copy(server.log_path, artifact_path("jupyter-server", ".log"))))
    paths = [str(p.resolve()) for p in dict.fromkeys(PENDING_ARTIFACTS)]
    PENDING_ARTIFACTS.clear()
    if not paths:
        return
    text = "\n".join(paths)
    report.user_properties.append((ARTIFACT_PROPERTY, paths))
    if hasattr(report.longrepr, "addsection"):
        report.longrepr.addsection(ARTIFACT_SECTION, text)  # printed with the failure, whatever --show-capture
    else:
        report.sections.append((ARTIFACT_SECTION, text))


def pytest_runtest_logreport(report):
    """Collect the artifacts each failed report names (in the xdist controller too, where this conftest is
    loaded: `pytest tests/e2e`; under scripts/test.sh each failure's report still names them)."""
    for name, paths in getattr(report, "user_properties", []):
        if name == ARTIFACT_PROPERTY:
            _REPORTED.extend((report.nodeid, path) for path in paths)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After the run, where the failed e2e tests left their screenshots and the server log."""
    if not _REPORTED:
        return
    terminalreporter.section(ARTIFACT_SECTION, sep="=", yellow=True, bold=True)
    for nodeid, path in dict.fromkeys(_REPORTED):
        terminalreporter.line(f"{nodeid}: {path}")
    terminalreporter.line(f"(folder: {ARTIFACTS.resolve()}; set TM_E2E_ARTIFACTS to put them elsewhere)")
