"""The student's JupyterLab, end to end, in headless Chromium (Playwright for Python, Debian's chromium).

What a student does on day one, through the real UI: open every chapter, type an answer, Run All, see the
slider redraw the figure, press nbgrader's Validate, and never meet the instructor's tools. The server is
started by scripts/lab.sh, the student's own launcher, so its configuration is what is tested. The server and
browser fixtures live in tests/e2e/conftest.py; screenshots of failed tests go to tests/e2e/artifacts/
(or $TM_E2E_ARTIFACTS), and each failure's report names them. Without /usr/bin/chromium or Playwright every
browser test skips with the reason; the lab.sh tests at the top need no browser.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import nbformat
import pytest

from jupyterlab_harness import (  # tests/e2e is on sys.path under pytest's default import mode
    COURSE,
    DISABLED_LAB_PLUGINS,
    DISABLED_SERVER_EXTENSIONS,
    LAB_SH,
    LAB_SH_ERROR,
    REPO,
    SOLUTIONS,
    new_page,
    save_screenshot,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("jupyterlab-e2e")]

KERNEL_TIMEOUT = 120_000  # ms; the kernel imports torch, and CI runs another worker beside us
RUN_ALL_TIMEOUT = 300_000  # ms; the orientation chapter takes ~10 s on a quiet 2-core machine
VALIDATE_TIMEOUT = 300_000  # ms; Validate re-executes the whole notebook in a fresh kernel

COURSE_NOTEBOOKS = sorted(p.relative_to(COURSE).as_posix() for p in COURSE.glob("*/*.ipynb")
                          if ".ipynb_checkpoints" not in p.parts)
ORIENTATION = "00_orientation/00_orientation.ipynb"
STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]'
VALIDATE_SUCCESS = "Success! Your notebook passes all the tests."  # nbgrader 0.9.6 labextension, validate dialog
VALIDATE_FAILED = "The following cell failed:"

# Exercise 2 is typed through the editor, as a student would; 1 and 3 are filled in the file beforehand.
TYPED_GRADE_ID = "causal_mask"
TYPED_LINE = "return torch.ones(n, n, dtype=torch.bool).tril()"


# --------------------------------------------------------------------------- helpers


def first_heading(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    raise AssertionError("the notebook's first markdown cell has no '# ' heading")


def solution_sources(chapter: str) -> dict[str, str]:
    """grade_id -> solution code of the reference notebook, without the BEGIN/END SOLUTION lines."""
    nb = nbformat.read(SOLUTIONS / chapter / f"{chapter}.ipynb", as_version=4)
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            lines = [line for line in cell.source.splitlines()
                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


def cell_index(nb, grade_id: str) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return i
    raise AssertionError(f"no cell with grade_id {grade_id!r}")


def open_notebook(page, server, relpath: str) -> None:
    """Open RELPATH in a clean workspace and wait until its kernel is idle."""
    page.goto(f"{server.url}/lab/tree/{relpath}?reset")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=KERNEL_TIMEOUT)
    wait_kernel_idle(page)


def wait_kernel_idle(page, timeout: float = KERNEL_TIMEOUT) -> None:
    """Wait until the current notebook's kernel is started and idle."""
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        "  return !!k && k.status === 'idle'; }",
        timeout=timeout,
    )


def kernel_sys_prefix(page) -> str:
    """sys.prefix of the current notebook's kernel, asked through JupyterLab's own kernel connection."""
    return page.evaluate(
        """async () => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            let out = '';
            const future = kernel.requestExecute(
                {code: 'import sys; print(sys.prefix, end="")', silent: false, store_history: false});
            future.onIOPub = msg => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
            await future.done;
            return out;
        }""")


def visible_dialog_text(page) -> str | None:
    dialogs = page.locator(".jp-Dialog")
    return dialogs.first.inner_text() if dialogs.count() else None


def press_validate(page) -> tuple[str, str]:
    """Press the toolbar's Validate button; return (dialog classes, dialog text) of the result."""
    button = page.locator(".jp-NotebookPanel-toolbar jp-button.validate-button")
    assert button.inner_text().strip() == "Validate"
    button.click()
    dialog = page.locator(".jp-Dialog.nbgrader-SuccessDialog, .jp-Dialog.nbgrader-ErrorDialog")
    dialog.wait_for(state="visible", timeout=VALIDATE_TIMEOUT)
    classes, text = dialog.get_attribute("class") or "", dialog.inner_text()
    dialog.locator(".jp-Dialog-footer button").last.click()
    dialog.wait_for(state="detached")
    return classes, text


# --------------------------------------------------------------------------- lab.sh itself, without a browser

FAKE_JUPYTER = """#!/usr/bin/env bash
# a stand-in for `jupyter`: records its arguments, fails where $FAKE_FAIL says
printf '%s\\n' "$*" >> "$FAKE_LOG"
case " $* " in
  *" lock "*) if [ "${FAKE_FAIL:-}" = lock ]; then echo "lock: cannot write page_config.json" >&2; exit 3; fi ;;
  *" server extension disable "*) if [ "${FAKE_FAIL:-}" = server ]; then
      echo "    - Validating nbgrader.server_extensions.formgrader..."
      echo "      X Validation failed: The module 'nbgrader.server_extensions.formgrader' could not be found."
    fi ;;
esac
exit 0
"""


def run_lab_sh(tmp_path, *args, fail: str = "", student: bool = False) -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/lab.sh ARGS with a fake `jupyter` on PATH; return the run and the `jupyter` calls it made.

    student=True goes the student's way, through scripts/env.sh, with TM_VENV pointing at a fake environment
    that env.sh finds complete (so it installs nothing); otherwise TM_LAB_ENV=current, as the e2e fixture runs it
    (TM_LAB_ENV=current skips env.sh: the fake environment's python is then never called).
    """
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    log = tmp_path / "jupyter-calls.txt"
    log.unlink(missing_ok=True)
    (venv / "bin" / "jupyter").write_text(FAKE_JUPYTER)
    # env.sh asks the environment's python whether torch, companion and grading import: yes, they do
    (venv / "bin" / "python").write_text('#!/usr/bin/env bash\nprintf \'python %s\\n\' "$*" >> "$FAKE_LOG"\n')
    for exe in ("jupyter", "python"):
        (venv / "bin" / exe).chmod(0o755)
    # env.sh reinstalls when its stamp is missing or pyproject.toml changed: the stamp of a finished install
    stamp = subprocess.run("cksum < pyproject.toml", shell=True, cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    (venv / ".tm-installed-test").write_text(stamp)
    env = {k: v for k, v in os.environ.items() if k not in ("TM_LAB_ENV", "TM_VENV", "TORCH_SPEC")}
    # TM_VENV in both cases: a lab.sh that ignored TM_LAB_ENV would still never touch a real environment
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", FAKE_LOG=str(log), FAKE_FAIL=fail,
               TM_VENV=str(venv))
    if not student:
        env["TM_LAB_ENV"] = "current"
    proc = subprocess.run(["bash", str(LAB_SH), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@pytest.mark.parametrize("student", [True, False], ids=["through-env.sh", "TM_LAB_ENV=current"])
def test_lab_sh_configures_then_opens_course(tmp_path, student):
    """`./scripts/lab.sh` with no arguments: hides nbgrader's instructor tools at sys-prefix level (quietly),
    then starts jupyter lab on course/."""
    proc, calls = run_lab_sh(tmp_path, student=student)
    assert proc.returncode == 0, proc.stderr
    assert LAB_SH_ERROR not in proc.stderr, proc.stderr
    jupyter = [c for c in calls if not c.startswith("python ")]
    assert not [c for c in calls if c.startswith("python") and "pip" in c], f"env.sh installed something: {calls}"
    plugins = " ".join(DISABLED_LAB_PLUGINS)
    servers = " ".join(DISABLED_SERVER_EXTENSIONS)
    assert jupyter == [
        f"labextension disable --level=sys_prefix {plugins}",
        f"labextension lock --level=sys_prefix {plugins}",
        f"server extension disable --sys-prefix {servers}",
        f"lab --notebook-dir={REPO / 'course'}",
    ], jupyter
    assert not any("validate" in c for c in jupyter), "Validate must stay available to students"


def test_lab_sh_arguments_pass_through_and_notebook_dir_replaces_course(tmp_path):
    proc, calls = run_lab_sh(tmp_path, "--no-browser", "--port=8899", f"--notebook-dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert calls[-1] == f"lab --no-browser --port=8899 --notebook-dir={tmp_path}", calls
    proc, calls = run_lab_sh(tmp_path, "--ServerApp.root_dir", str(tmp_path))
    assert calls[-1] == f"lab --ServerApp.root_dir {tmp_path}", calls


@pytest.mark.parametrize("fail", ["lock", "server"])
def test_lab_sh_reports_a_failing_configuration_command(tmp_path, fail):
    """A configuration command that fails (or, like `jupyter server extension disable`, says "Validation
    failed" and exits 0) is reported on stderr with its output; JupyterLab still starts for the student."""
    proc, calls = run_lab_sh(tmp_path, fail=fail)
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(LAB_SH_ERROR)]
    assert len(errors) == 1, proc.stderr
    if fail == "lock":
        assert "jupyter labextension lock" in errors[0] and "exit 3" in errors[0], errors
        assert "cannot write page_config.json" in proc.stderr
    else:
        assert "jupyter server extension disable" in errors[0], errors
        assert "Validation failed" in proc.stderr
    assert calls[-1] == f"lab --notebook-dir={REPO / 'course'}", calls


# --------------------------------------------------------------------------- the student setup


def test_instructor_tools_not_exposed(page, lab_server):
    """Formgrader, Create Assignment and the course list are absent (and locked off); Validate is in the
    notebook toolbar. The server is scripts/lab.sh's: this is what its configuration commands achieved."""
    assert not lab_server.launcher_errors(), "scripts/lab.sh reported:\n" + "\n".join(lab_server.launcher_errors())
    for path in ("/formgrader", "/formgrader/api/status", "/formgraders"):
        assert lab_server.get(path)[0] == 404, f"GET {path} is served: the instructor's server extension is on"
    assert lab_server.get("/nbgrader_version?version=0.9.6")[0] == 200, "nbgrader's Validate endpoint is missing"

    open_notebook(page, lab_server, ORIENTATION)
    commands = page.evaluate(
        "ids => Object.fromEntries(ids.map(id => [id, window.jupyterapp.commands.hasCommand(id)]))",
        ["nbgrader:open-formgrader", "nbgrader:open-formgrader-local", "nbgrader:open-create-assignment",
         "nbgrader:open-course-list", "nbgrader:open-assignment-list"],
    )
    # nbgrader's labextension is loaded (its student-side Assignment List is there) ...
    assert commands.pop("nbgrader:open-assignment-list"), "nbgrader's labextension did not load"
    # ... and its instructor commands are not.
    assert not any(commands.values()), f"instructor commands registered: {commands}"

    # The Validate button, in the notebook toolbar
    assert page.locator(".jp-NotebookPanel-toolbar .validate-button").inner_text().strip() == "Validate"

    # Menus: open every top-level menu and read its labels
    labels = []
    for item in page.locator(".lm-MenuBar-content > .lm-MenuBar-item").all():
        item.click()
        page.locator(".lm-Menu").first.wait_for(state="visible")
        labels += page.locator(".lm-Menu .lm-Menu-itemLabel").all_inner_texts()
        page.keyboard.press("Escape")
    assert "Run All Cells" in labels  # the menus were read
    bad = [label for label in labels if re.search(r"formgrader|create assignment|course list", label, re.I)]
    assert not bad, f"instructor entries in the menus: {bad}"

    # Command palette: search for each instructor tool
    for query in ("Formgrader", "Create assignment", "Course List"):
        page.keyboard.press("Control+Shift+C")
        search = page.locator(".lm-CommandPalette-input")
        search.wait_for(state="visible")
        search.fill(query)
        page.wait_for_timeout(200)
        found = [t.strip() for t in page.locator(".lm-CommandPalette-item:visible .lm-CommandPalette-itemLabel")
                 .all_inner_texts()]
        page.keyboard.press("Escape")
        assert not [t for t in found if query.lower() in t.lower()], f"palette offers {found} for {query!r}"

    # Side bars: no Create Assignment panel
    tabs = page.locator(".jp-SideBar .lm-TabBar-tab").evaluate_all(
        "els => els.map(e => (e.getAttribute('title') || '') + ' ' + e.textContent)")
    assert not [t for t in tabs if re.search(r"create assignment|formgrader", t, re.I)], tabs
    assert page.locator("#nbgrader-create_assignemnt").count() == 0  # nbgrader's own (misspelt) panel id

    # Locked: the Plugin Manager (Settings -> Plugin Manager, or its REST API) cannot switch them back on
    locks = lab_server.api("GET", "/lab/api/plugins")
    assert set(DISABLED_LAB_PLUGINS) <= set(locks["lockRules"]), f"not locked: {locks}"
    for plugin in DISABLED_LAB_PLUGINS:
        try:
            result = lab_server.api("POST", "/lab/api/plugins", body={"cmd": "enable", "plugin_name": plugin})
        except urllib.error.HTTPError as err:
            result = {"status": "error", "message": err.read().decode("utf-8", "replace")}
        else:  # enabled (in the throwaway user config): put it back before failing
            lab_server.api("POST", "/lab/api/plugins", body={"cmd": "disable", "plugin_name": plugin})
        assert result.get("status") == "error" and "locked" in result.get("message", ""), \
            f"the Plugin Manager enabled {plugin}: {result}"


# --------------------------------------------------------------------------- every chapter opens


@pytest.mark.parametrize("relpath", COURSE_NOTEBOOKS)
def test_course_notebook_opens(page, lab_server, relpath):
    """Each course notebook opens with its kernel, renders its title and all its cells, without a dialog."""
    nb = nbformat.read(COURSE / relpath, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    open_notebook(page, lab_server, relpath)
    heading = page.locator(".jp-Notebook .jp-MarkdownCell .jp-RenderedMarkdown h1").first
    heading.wait_for(state="visible")
    assert heading.inner_text().replace("¶", "").strip() == first_heading(nb)
    assert page.locator(".jp-Notebook > .jp-Cell, .jp-Notebook .jp-WindowedPanel-viewport > .jp-Cell").count() \
        == len(nb.cells)
    assert visible_dialog_text(page) is None, f"a dialog opened: {visible_dialog_text(page)}"
    assert page.locator(".jp-NotebookPanel-toolbar .validate-button").count() == 1
    # A kernel that has just started reports Busy while it answers Lab's first requests: wait for Idle.
    status_bar = page.locator(".jp-StatusBar-Widget")
    deadline = time.monotonic() + 90
    while "Python 3 (ipykernel) | Idle" not in status_bar.inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    status = status_bar.inner_text()
    assert "Python 3 (ipykernel) | Idle" in status, status
    # the `python3` kernel is this virtual environment's python (companion, torch and nbgrader live there)
    assert Path(kernel_sys_prefix(page)).resolve() == Path(sys.prefix).resolve()
    assert not page.console_errors, page.console_errors


# --------------------------------------------------------------------------- orientation, run all, validate


class Orientation:
    """The orientation chapter, answered and run through the UI, in one browser tab shared by its tests."""

    def __init__(self, page, path: Path, run_all_seconds: float, errors: list[str], outputs: list[str]):
        self.page = page
        self.path = path
        self.run_all_seconds = run_all_seconds
        self.errors = errors
        self.outputs = outputs


@pytest.fixture(scope="module")
def orientation(browser, lab_server):
    # The student's copy, with exercises 1 and 3 answered in the file.
    relpath = "answered/" + ORIENTATION
    path = lab_server.root / relpath
    path.parent.mkdir(parents=True)
    nb = nbformat.read(COURSE / ORIENTATION, as_version=4)
    solutions = solution_sources("00_orientation")
    assert len(solutions) == 3, solutions.keys()
    for grade_id, source in solutions.items():
        if grade_id != TYPED_GRADE_ID:
            nb.cells[cell_index(nb, grade_id)].source = source
    nbformat.write(nb, path)

    kernels_before = lab_server.kernel_ids()
    page = new_page(browser)
    try:
        open_notebook(page, lab_server, relpath)
        cells = page.locator(".jp-Notebook .jp-Cell")
        assert cells.count() == len(nb.cells)

        # Exercise 2, typed: replace the `raise NotImplementedError()` line, as the instructions say.
        editor = cells.nth(cell_index(nb, TYPED_GRADE_ID)).locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Shift+Home")
        page.keyboard.type(TYPED_LINE)
        page.keyboard.press("Escape")  # command mode

        # Run -> Run All Cells
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        start = time.monotonic()
        page.wait_for_function(
            """stderr => {
                const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
                    .map(p => p.textContent.trim());
                if (!prompts.length || prompts.some(p => p.includes('*'))) return false;
                return prompts.every(p => /^\\[\\d+\\]:$/.test(p)) || !!document.querySelector('.jp-Notebook ' + stderr);
            }""",
            arg=STDERR,
            timeout=RUN_ALL_TIMEOUT,
        )
        run_all_seconds = time.monotonic() - start
        errors = page.locator(f".jp-Notebook .jp-OutputArea-output{STDERR}").all_inner_texts()
        outputs = page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts()
    except BaseException:
        save_screenshot(page, "orientation-fixture")
        page.context.close()
        lab_server.shutdown_kernels(keep=kernels_before)
        raise
    yield Orientation(page, path, run_all_seconds, errors, outputs)
    page.context.close()
    lab_server.shutdown_kernels(keep=kernels_before)


def test_orientation_run_all_without_errors(orientation):
    """Run -> Run All Cells on the answered chapter: every cell runs, no error or stderr output anywhere."""
    print(f"Run All took {orientation.run_all_seconds:.1f} s")
    assert not orientation.errors, "error/stderr outputs after Run All:\n" + "\n---\n".join(orientation.errors)
    prompts = orientation.page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    assert all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts), prompts
    text = "\n".join(orientation.outputs)
    for check in ("softmax matches torch.softmax", "causal_mask(4) has the right shape",
                  "random_tokens has the right shape"):
        assert check in text, f"visible test output {check!r} missing"


def test_orientation_widget_slider_redraws_figure(orientation):
    """The FloatLogSlider renders, and moving it redraws the figure in the widget's output area."""
    page = orientation.page
    interact = page.locator(".jp-Notebook .widget-interact").first
    slider = interact.locator(".widget-hslider")
    slider.wait_for(state="visible", timeout=30_000)
    assert "temperature" in interact.locator(".widget-label").first.inner_text()
    image = interact.locator(".jp-OutputArea-output img")
    image.wait_for(state="visible", timeout=30_000)
    before_src, before_readout = image.get_attribute("src"), interact.locator(".widget-readout").inner_text()

    # One step right on the focused handle: the keyboard path fires the slider's `change` event, which
    # is when a `continuous_update=False` slider tells the kernel.
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        """([el, before]) => { const img = el.querySelector('.jp-OutputArea-output img');
                               return !!img && img.getAttribute('src') !== before; }""",
        arg=[interact.element_handle(), before_src],
        timeout=60_000,
    )
    wait_kernel_idle(page)
    after_readout = interact.locator(".widget-readout").inner_text()
    assert after_readout != before_readout, after_readout
    assert image.count() == 1, "the redrawn output should hold exactly one figure"
    assert not interact.locator(f".jp-OutputArea-output{STDERR}").count(), "the redraw wrote to stderr"


def test_orientation_validate_passes(orientation):
    """nbgrader's Validate button on the answered chapter reports success."""
    classes, text = press_validate(orientation.page)
    assert VALIDATE_SUCCESS in text, f"Validate did not pass ({classes}):\n{text}"
    assert "nbgrader-SuccessDialog" in classes
    # Validate saved the notebook first: the typed answer is in the file, indentation and brackets intact.
    saved = nbformat.read(orientation.path, as_version=4)
    typed = saved.cells[cell_index(saved, TYPED_GRADE_ID)].source
    assert typed.splitlines()[-1] == "    " + TYPED_LINE, typed
    assert "NotImplementedError" not in typed


def test_validate_unanswered_notebook_reports_failures(page, lab_server):
    """Validate on the notebook as released (no answers) lists the failing test cells."""
    open_notebook(page, lab_server, ORIENTATION)
    classes, text = press_validate(page)
    assert VALIDATE_SUCCESS not in text
    assert "nbgrader-ErrorDialog" in classes, classes
    released = nbformat.read(COURSE / ORIENTATION, as_version=4)
    graded = [c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert text.count(VALIDATE_FAILED) == len(graded), text  # every test cell fails, each listed once
    assert "NotImplementedError" in text
    # Validate saved the notebook first, unchanged: the stubs are still there
    saved = nbformat.read(lab_server.root / ORIENTATION, as_version=4)
    assert [c.source for c in saved.cells] == [c.source for c in released.cells]
