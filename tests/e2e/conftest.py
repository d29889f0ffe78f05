"""Fixtures for the JupyterLab end-to-end tests: `lab_server` (a student's jupyter lab on a throwaway copy of
course/), `browser` (headless Debian Chromium through Playwright), `page` (a fresh tab), and a screenshot
of the page for every failed test. The machinery is in jupyterlab_harness.py.
"""

from __future__ import annotations

import shutil

import pytest

from jupyterlab_harness import (  # tests/e2e is on sys.path under pytest's default import mode
    ARTIFACTS,
    CHROMIUM_ARGS,
    new_page,
    require_browser_stack,
    save_screenshot,
    start_lab_server,
)

_FAILED: list[str] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: JupyterLab end-to-end test in headless Chromium (tests/e2e)")
    # pytest-xdist registers it; without xdist (-p no:xdist) it would warn as unknown
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup group")


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    require_browser_stack()  # no point starting a server nobody can look at
    server = start_lab_server(tmp_path_factory.mktemp("lab"))
    yield server
    server.shutdown_kernels()
    server.stop()
    if _FAILED and server.log_path.exists():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(server.log_path, ARTIFACTS / "jupyter-server.log")


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the whole session (JupyterLab and site tests alike).

    Playwright's sync API allows one running instance per thread: a second `sync_playwright().start()`
    fails with "Sync API inside the asyncio loop", so every browser test shares this one.
    """
    exe = require_browser_stack()
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
    """Failed e2e test: save a screenshot of its page (a `page` fixture, or a fixture holding `.page`)."""
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed or "e2e" not in item.keywords:
        return
    _FAILED.append(item.nodeid)
    funcargs = getattr(item, "funcargs", {})
    for value in funcargs.values():
        page = getattr(value, "page", value)
        if type(page).__name__ == "Page" and not page.is_closed():
            path = save_screenshot(page, f"{item.nodeid}-{report.when}")
            if path:
                report.sections.append(("e2e screenshot", str(path)))
            break
    server = funcargs.get("lab_server")
    if server is not None:
        report.sections.append(("jupyter server log (tail)", server.log_tail()))
