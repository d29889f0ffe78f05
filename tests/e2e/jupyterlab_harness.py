"""Harness for the JupyterLab end-to-end tests: a student's `jupyter lab` on a throwaway copy of course/,
driven by Debian's Chromium through Playwright for Python (shared/PITFALLS.md item 20).

The server mirrors scripts/lab.sh (nbgrader's instructor tools hidden, Validate kept) without touching the
virtual environment's own configuration: everything it reads lives in temporary JUPYTER_CONFIG_DIR,
JUPYTERLAB_SETTINGS_DIR, JUPYTER_DATA_DIR, JUPYTER_RUNTIME_DIR and JUPYTERLAB_WORKSPACES_DIR folders.
test_jupyterlab.py checks that the names disabled here are exactly the ones scripts/lab.sh disables.

Environment knobs:
  TM_CHROMIUM        the Chromium binary (default /usr/bin/chromium, then `chromium` on PATH)
  TM_E2E_ARTIFACTS   where failure screenshots and the server log go (default tests/e2e/artifacts/)
  TM_E2E_REQUIRE=1   fail instead of skip when Chromium or Playwright is missing (for CI that has them)
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COURSE = REPO / "course"
SOLUTIONS = REPO / "solutions"
LAB_SH = REPO / "scripts" / "lab.sh"

# What scripts/lab.sh turns off for students (PITFALLS item 12); Validate (the `validate-assignment`
# lab plugin and the `validate_assignment` server extension) stays on.
DISABLED_LAB_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
)
DISABLED_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.course_list",
)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
]

SERVER_START_TIMEOUT = 90  # s; a loaded CI worker imports jupyterlab + nbgrader slowly
ARTIFACTS = Path(os.environ.get("TM_E2E_ARTIFACTS") or (Path(__file__).parent / "artifacts"))


# --------------------------------------------------------------------------- prerequisites


def chromium_path() -> str | None:
    explicit = os.environ.get("TM_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_browser_stack() -> str:
    """The Chromium binary; without it or Playwright, skip the calling test with the reason
    (or fail, where TM_E2E_REQUIRE=1 says this machine must run them)."""
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "Playwright for Python is not installed (pip install playwright)"
    exe = chromium_path()
    if missing is None and exe is None:
        where = os.environ.get("TM_CHROMIUM") or "/usr/bin/chromium"
        missing = f"Chromium not found at {where} (apt-get install chromium, or set TM_CHROMIUM)"
    if missing:
        if os.environ.get("TM_E2E_REQUIRE", "") not in ("", "0"):
            pytest.fail(f"{missing}, and TM_E2E_REQUIRE is set")
        pytest.skip(f"{missing}: JupyterLab e2e tests skipped")
    return exe


# --------------------------------------------------------------------------- the server


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_student_config(config_dir: Path, settings_dir: Path) -> None:
    """The student's lab configuration, in throwaway folders.

    labconfig/page_config.json is what `jupyter labextension disable --level=user PLUGIN` writes under
    JUPYTER_CONFIG_DIR (lab.sh writes the same at --level=sys_prefix). Server extensions are disabled on the
    command line instead (see `lab_command`): a user-level jupyter_server_config.d file would lose to the
    venv's own etc/jupyter/jupyter_server_config.d/nbgrader.json, which jupyter_core ranks first inside a
    virtual environment (JUPYTER_PREFER_ENV_PATH).
    """
    _write_json(config_dir / "labconfig" / "page_config.json",
                {"disabledExtensions": {name: True for name in DISABLED_LAB_PLUGINS}})
    # JupyterLab 4.6 detaches off-screen cells unless windowing is off; no news or update requests.
    _write_json(settings_dir / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                {"windowingMode": "none"})
    _write_json(settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})


def lab_command(port: int, root_dir: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--allow-root",
        f"--ServerApp.root_dir={root_dir}",
        # window.jupyterapp, so the tests can ask the command registry and the kernel what exists
        "--LabApp.expose_app_in_browser=True",
    ]
    # Command-line entries win over every config file (jupyter_server's ServerApp.find_server_extensions).
    cmd += [f"--ServerApp.jpserver_extensions={name}=False" for name in DISABLED_SERVER_EXTENSIONS]
    return cmd


class LabServer:
    def __init__(self, url: str, root: Path, log_path: Path, proc: subprocess.Popen):
        self.url = url.rstrip("/")
        self.root = root
        self.log_path = log_path
        self.proc = proc

        self._cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self._cookies))

    def get(self, path: str, timeout: float = 10) -> tuple[int, str]:
        try:
            with self._opener.open(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")

    def api(self, method: str, path: str, timeout: float = 10):
        """A REST call; non-GET requests carry the _xsrf cookie's value, as JupyterLab's own requests do."""
        headers = {}
        if method != "GET":
            xsrf = [c.value for c in self._cookies if c.name == "_xsrf"]
            if not xsrf:
                self.get("/lab")  # sets the _xsrf cookie
                xsrf = [c.value for c in self._cookies if c.name == "_xsrf"]
            headers["X-XSRFToken"] = xsrf[0] if xsrf else ""
        req = urllib.request.Request(self.url + path, method=method, headers=headers)
        with self._opener.open(req, timeout=timeout) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def kernel_ids(self) -> set[str]:
        try:
            return {kernel["id"] for kernel in self.api("GET", "/api/kernels") or []}
        except (OSError, urllib.error.URLError):
            return set()

    def shutdown_kernels(self, keep: set[str] = frozenset()) -> None:
        """Stop the running kernels (except KEEP), so they do not pile up on a 2-core machine."""
        for kernel_id in self.kernel_ids() - set(keep):
            try:
                self.api("DELETE", f"/api/kernels/{kernel_id}", timeout=30)
            except (OSError, urllib.error.URLError):
                pass

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab_server(base: Path) -> LabServer:
    """`jupyter lab` on a copy of course/ under BASE, configured like scripts/lab.sh, on a free port."""
    root = base / "root"
    shutil.copytree(COURSE, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    dirs = {name: base / name for name in ("config", "settings", "data", "runtime", "workspaces")}
    for d in dirs.values():
        d.mkdir()
    write_student_config(dirs["config"], dirs["settings"])

    env = dict(os.environ)
    # The notebooks' kernelspec is `python3`, whose argv starts with `python`: make it this venv's python.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        PYTHONUNBUFFERED="1",
    )
    for var in ("JUPYTER_PATH", "JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH"):
        env.pop(var, None)

    log_path = base / "server.log"
    last_log = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = _free_port()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(lab_command(port, root), cwd=root, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        server = LabServer(f"http://127.0.0.1:{port}", root, log_path, proc)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if server.get("/api/status", timeout=2)[0] == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.3)
        last_log = server.log_tail()
        server.stop()
    pytest.fail(f"jupyter lab did not start; server log:\n{last_log}")


# --------------------------------------------------------------------------- the browser


def new_page(browser):
    """A fresh tab in its own browser context; uncaught page errors collect in page.console_errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    return page


def save_screenshot(page, name: str) -> Path | None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:150] + ".png")
    try:
        page.screenshot(path=str(path), full_page=True, timeout=15_000)
    except Exception:  # a crashed page must not hide the test's own error
        return None
    return path
