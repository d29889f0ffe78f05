"""Harness for the JupyterLab end-to-end tests: a student's `jupyter lab` on a throwaway copy of course/,
driven by Debian's Chromium through Playwright for Python (shared/PITFALLS.md item 20).

The server is started by scripts/lab.sh itself, the student's launcher: its configuration commands run for
real, so a lab.sh that stopped hiding nbgrader's instructor tools fails test_instructor_tools_not_exposed.
lab.sh writes that configuration into the environment's own (sys-prefix) Jupyter configuration, as it does
for a student; `pristine_env_config` first strips what an earlier lab.sh run left there (otherwise the old
settings would hide a broken lab.sh) and puts the folder back as it was when the session ends. Everything
else the server reads or writes (user config, lab settings, data, runtime, workspaces) lives in temporary
folders, and lab.sh's arguments after its own `--notebook-dir` pick the notebook folder (a copy of course/),
a free port and no browser.

Environment knobs:
  TM_CHROMIUM        the Chromium binary (default /usr/bin/chromium, then `chromium` on PATH)
  TM_E2E_ARTIFACTS   where failure screenshots and the server log go (default tests/e2e/artifacts/)
  TM_E2E_REQUIRE=1   fail instead of skip when Chromium or Playwright is missing (for CI that has them)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COURSE = REPO / "course"
SOLUTIONS = REPO / "solutions"
LAB_SH = REPO / "scripts" / "lab.sh"

# What scripts/lab.sh turns off for students (PITFALLS item 12), as the tests check it; Validate (the
# `validate-assignment` lab plugin and the `validate_assignment` server extension) stays on.
DISABLED_LAB_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
)
DISABLED_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.course_list",
)
LAB_SH_ERROR = "lab.sh: error:"  # how lab.sh reports a configuration command that failed

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
]

SERVER_START_TIMEOUT = 240  # s: lab.sh's three configuration commands (each imports jupyterlab, ~10 s on a
# loaded 2-core machine), then jupyter lab itself (jupyterlab + nbgrader imports on a loaded CI worker)
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


def require_browser_stack(purpose: str = "JupyterLab e2e tests") -> str:
    """The Chromium binary; without it or Playwright, skip the calling test with the reason and PURPOSE
    (what is skipped), or fail where TM_E2E_REQUIRE=1 says this machine must run them."""
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
            pytest.fail(f"{missing}, and TM_E2E_REQUIRE is set ({purpose})")
        pytest.skip(f"{missing}: {purpose} skipped")
    return exe


# --------------------------------------------------------------------------- the server


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_test_settings(settings_dir: Path) -> None:
    """Lab settings the tests need, in the throwaway settings dir (nothing here hides or shows nbgrader)."""
    # JupyterLab 4.6 detaches off-screen cells unless windowing is off; no news or update requests.
    _write_json(settings_dir / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                {"windowingMode": "none"})
    _write_json(settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})


def lab_command(port: int, root_dir: Path) -> list[str]:
    """scripts/lab.sh, with the arguments a test server needs after its own (later arguments win)."""
    return [
        "bash", str(LAB_SH),
        f"--notebook-dir={root_dir}",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--allow-root",
        # window.jupyterapp, so the tests can ask the command registry and the kernel what exists
        "--LabApp.expose_app_in_browser=True",
    ]


# --------------------------------------------------------------------------- the environment's Jupyter config


def env_config_dir() -> Path:
    """The sys-prefix Jupyter configuration folder of this environment (where lab.sh's settings go)."""
    from jupyter_core.paths import ENV_CONFIG_PATH

    return Path(ENV_CONFIG_PATH[0])


def _nbgrader_name(name: str) -> bool:
    return name.startswith("@jupyter/nbgrader") or name.startswith("nbgrader.")


def strip_lab_sh_settings(conf: Path) -> list[str]:
    """Remove from CONF what `jupyter labextension disable/lock` and `jupyter server extension disable` write
    for nbgrader (the lab.sh settings of an earlier run); return the files changed. nbgrader's own
    jupyter_server_config.d/nbgrader.json (which enables its server extensions) stays."""
    changed = []
    for path in sorted(conf.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        before = json.dumps(data, sort_keys=True)
        for key in ("disabledExtensions", "lockedExtensions"):  # labconfig/page_config.json
            value = data.get(key)
            if isinstance(value, dict):
                data[key] = {k: v for k, v in value.items() if not _nbgrader_name(k)}
            elif isinstance(value, list):
                data[key] = [k for k in value if not _nbgrader_name(k)]
        server = data.get("ServerApp", {})
        if isinstance(server, dict) and isinstance(server.get("jpserver_extensions"), dict):
            server["jpserver_extensions"] = {k: v for k, v in server["jpserver_extensions"].items()
                                             if v or not _nbgrader_name(k)}
        if json.dumps(data, sort_keys=True) != before:
            _write_json(path, data)
            changed.append(str(path))
    return changed


def _snapshot(conf: Path) -> tuple[dict[Path, bytes], set[Path]]:
    """The files (with their bytes) and folders under CONF."""
    if not conf.is_dir():
        return {}, set()
    entries = list(conf.rglob("*"))
    return {p: p.read_bytes() for p in entries if p.is_file()}, {p for p in entries if p.is_dir()} | {conf}


def _restore(conf: Path, snapshot: tuple[dict[Path, bytes], set[Path]]) -> None:
    """Put CONF back as SNAPSHOT found it: new files and folders removed, changed or removed files rewritten."""
    files, dirs = snapshot
    now_files, now_dirs = _snapshot(conf)
    for path in now_files.keys() - files.keys():
        path.unlink()
    for path, data in files.items():
        if now_files.get(path) != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for d in sorted(now_dirs - dirs, key=lambda d: len(d.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


@contextlib.contextmanager
def pristine_env_config(wait_seconds: float = 1800):
    """This environment's sys-prefix Jupyter configuration without lab.sh's nbgrader settings, for the
    duration; afterwards the folder is put back exactly as it was. Two test sessions on one environment take
    turns (a lock file in the temporary folder): one would otherwise undo the other's settings."""
    conf = env_config_dir()
    key = hashlib.sha256(str(conf.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"tm-e2e-jupyter-config-{key}.lock"
    with open(lock_path, "a") as lock:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session has held {lock_path} (the JupyterLab e2e tests of "
                                f"{sys.prefix}) for {wait_seconds:.0f} s")
                time.sleep(1)
        snapshot = _snapshot(conf)
        try:
            strip_lab_sh_settings(conf)
            yield conf
        finally:
            _restore(conf, snapshot)
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the server


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

    def api(self, method: str, path: str, timeout: float = 10, body: dict | None = None):
        """A REST call; non-GET requests carry the _xsrf cookie's value, as JupyterLab's own requests do.
        An HTTP error status raises urllib.error.HTTPError."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if method != "GET":
            xsrf = [c.value for c in self._cookies if c.name == "_xsrf"]
            if not xsrf:
                self.get("/lab")  # sets the _xsrf cookie
                xsrf = [c.value for c in self._cookies if c.name == "_xsrf"]
            headers["X-XSRFToken"] = xsrf[0] if xsrf else ""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, method=method, headers=headers, data=data)
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

    def launcher_errors(self) -> list[str]:
        """The configuration errors scripts/lab.sh reported before it started jupyter lab."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        lines = text.splitlines()
        return [line + "".join("\n" + more for more in _continuation(lines, i))
                for i, line in enumerate(lines) if line.startswith(LAB_SH_ERROR)]

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


def _continuation(lines: list[str], i: int) -> list[str]:
    out = []
    for line in lines[i + 1:]:
        if not line.startswith("  | "):
            break
        out.append(line)
    return out


def start_lab_server(base: Path) -> LabServer:
    """scripts/lab.sh (TM_LAB_ENV=current: in this environment) on a copy of course/ under BASE, on a free port.

    Call it inside `pristine_env_config()`: lab.sh writes its settings into the environment's configuration.
    """
    root = base / "root"
    shutil.copytree(COURSE, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    dirs = {name: base / name for name in ("config", "settings", "data", "runtime", "workspaces")}
    for d in dirs.values():
        d.mkdir()
    write_test_settings(dirs["settings"])

    env = dict(os.environ)
    # lab.sh's `jupyter` and the notebooks' `python3` kernel (whose argv starts with `python`): this venv's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(
        TM_LAB_ENV="current",
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        PYTHONUNBUFFERED="1",
    )
    for var in ("JUPYTER_PATH", "JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH", "TM_VENV"):
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
    pytest.fail(f"scripts/lab.sh did not start jupyter lab; its output:\n{last_log}")


# --------------------------------------------------------------------------- the browser


def new_page(browser):
    """A fresh tab in its own browser context; uncaught page errors collect in page.console_errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    return page


# Artifacts written since the last failed report: the makereport hook (conftest.py) names them in that report.
PENDING_ARTIFACTS: list[Path] = []


def artifact_path(name: str, suffix: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:150] + suffix)


def save_screenshot(page, name: str) -> Path | None:
    """A full-page PNG of PAGE in the artifacts folder (None if the page could not be captured)."""
    path = artifact_path(name, ".png")
    try:
        page.screenshot(path=str(path), full_page=True, timeout=15_000)
    except Exception:  # a crashed page must not hide the test's own error
        return None
    PENDING_ARTIFACTS.append(path)
    return path
