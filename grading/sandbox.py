"""Run a submission's kernel in a sandbox (Linux: bubblewrap, setpriv, prlimit).

nbgrader runs the student's code in a kernel as the grader's user, inside the course directory
(shared/PITFALLS.md item 10). Here the grader (nbgrader, its gradebook, the chapter's source) stays on the
trusted side and only the kernel is sandboxed:

* **file system**: an allow-list. The kernel sees the system (``/usr``, ``/etc``) and the Python
  environment read-only, the ``companion`` package read-only, a private writable scratch folder (its cwd
  and HOME) holding read-only copies of the chapter's data files, and the folder of its connection file.
  Not the course root, the gradebook, the chapter's source with hidden tests, other submissions, the
  repository or the grader's home.
* **network**: a namespace of its own (loopback only); the kernel talks to nbgrader over Unix sockets
  (``KernelManager.transport = "ipc"``) in the connection folder.
* **identity and limits**: run as root, each grading slot gets an unprivileged uid of its own (so
  ``RLIMIT_NPROC`` counts only that slot's processes: a fork bomb starves nobody else); run as an ordinary
  user (``rootless``), the kernel gets a user namespace of its own instead (bubblewrap's ``--unshare-user``,
  which needs unprivileged user namespaces, the default on Debian and Ubuntu), and the process limit is
  counted on top of the processes that user already runs. Either way: no capabilities, no new privileges,
  a new pid namespace (killing the sandbox kills everything in it), ``prlimit`` caps on address space (per
  process), processes, open files, CPU seconds and file size.
* **environment**: cleared; only what a kernel needs (PATH, HOME, the chapter's scale switch) is set, so
  the grader's paths, tokens and ``NBGRADER_*`` variables never reach student code.

``kernel_argv`` builds the command; :func:`write_kernelspec` writes it as the ``python3`` kernelspec in a
private ``JUPYTER_PATH`` so nbgrader's own Execute preprocessor starts it unchanged.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MEMORY_MB = 8192
DEFAULT_PROCESSES = 256
DEFAULT_OPEN_FILES = 512
DEFAULT_FILE_SIZE_MB = 256
FIRST_UID = 61000  # one uid per grading slot: 61000, 61001, ... (see run_uids for concurrent runs)


class SandboxUnavailable(RuntimeError):
    pass


def tools() -> dict[str, str | None]:
    return {name: shutil.which(name) for name in ("bwrap", "setpriv", "prlimit")}


def is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def run_uids(slots: int) -> int:
    """The first uid for this run's grading slots: runs started at the same time (two instructors, or two
    test workers) get different uids, so one run's fork bomb cannot use up another's process limit."""
    import os

    return FIRST_UID + (os.getpid() % 4096) * max(1, slots)


def available() -> tuple[bool, str]:
    """(usable, reason): the tools exist and a trivial sandbox of the kind this user gets starts."""
    if not sys.platform.startswith("linux"):
        return False, "the sandbox needs Linux (bubblewrap); this is " + sys.platform
    missing = [name for name, path in tools().items() if not path]
    if missing:
        hint = " (Debian/Ubuntu: apt-get install bubblewrap)" if "bwrap" in missing else ""
        return False, f"missing {', '.join(missing)}{hint}"
    import subprocess

    t = tools()
    if is_root():
        argv = [t["bwrap"], "--unshare-net", "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/",
                t["setpriv"], f"--reuid={FIRST_UID}", f"--regid={FIRST_UID}", "--clear-groups", "true"]
    else:
        argv = [t["bwrap"], "--unshare-user", "--uid", str(FIRST_UID), "--gid", str(FIRST_UID), "--unshare-net",
                "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    probe = subprocess.run(argv, capture_output=True, text=True)
    if probe.returncode != 0:
        why = probe.stderr.strip()[:200]
        if not is_root():
            why += " (as an ordinary user the sandbox needs unprivileged user namespaces: "
            why += "sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu 24.04 an AppArmor profile for bwrap)"
        return False, f"bubblewrap cannot create namespaces here: {why}"
    return True, ""


def _tasks_of(uid: int) -> int:
    """Processes and threads the user ``uid`` runs now (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            if int(fields.get("Uid", "-1").split()[0]) == uid:
                count += int(fields.get("Threads", "1").strip())
        except ValueError:
            continue
    return count


@dataclass
class Limits:
    memory_mb: int = DEFAULT_MEMORY_MB
    processes: int = DEFAULT_PROCESSES
    open_files: int = DEFAULT_OPEN_FILES
    cpu_seconds: int = 900
    file_size_mb: int = DEFAULT_FILE_SIZE_MB


@dataclass
class Sandbox:
    """Where one kernel lives: ``scratch`` (cwd, HOME, writable) and ``runtime`` (connection file, sockets)."""

    scratch: Path
    runtime: Path
    uid: int = FIRST_UID
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    readonly: list[Path] = field(default_factory=list)  # extra read-only paths (same path inside)
    rootless: bool | None = None  # None: rootless exactly when the grader is not root
    startup: list[str] = field(default_factory=list)  # Python lines the kernel runs before any cell

    @property
    def is_rootless(self) -> bool:
        return (not is_root()) if self.rootless is None else self.rootless


def _python_paths() -> list[Path]:
    """The interpreter and environment the kernel runs in: base install and venv, read-only."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.prefix)}
    return sorted(paths)


def _package_paths() -> list[Path]:
    """Packages that may live outside the environment (an editable install of ``companion``)."""
    import companion

    return [Path(companion.__file__).resolve().parent]


def _ancestors(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for path in paths:
        for parent in reversed(path.parents):
            if parent != Path("/") and parent not in seen:
                seen.add(parent)
                out.append(parent)
    return out


def kernel_argv(box: Sandbox, inner: list[str]) -> list[str]:
    """``prlimit ... bwrap ... setpriv ... <inner>``: run ``inner`` (the kernel command) sandboxed."""
    t = tools()
    if not all(t.values()):
        raise SandboxUnavailable(available()[1])
    lim = box.limits
    import os

    # RLIMIT_NPROC counts every process of the real user: an ordinary user's own count comes on top
    processes = lim.processes + (_tasks_of(os.getuid()) if box.is_rootless and not is_root() else 0)
    argv = [
        # jupyter_client interrupts a kernel by SIGINT to its process group: prlimit and bwrap must ignore
        # it (bwrap would die and take the kernel with it); ipykernel installs its own handler when it runs
        # a cell, so the kernel still gets KeyboardInterrupt
        "/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh",
        t["prlimit"],
        f"--as={lim.memory_mb * 1024 * 1024}",
        f"--nproc={processes}",
        f"--nofile={lim.open_files}",
        f"--cpu={lim.cpu_seconds}",
        f"--fsize={lim.file_size_mb * 1024 * 1024}",
        "--core=0",
        "--",
        t["bwrap"],
        *(["--unshare-user", "--uid", str(box.uid), "--gid", str(box.uid), "--cap-drop", "ALL"]
          if box.is_rootless else []),
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        # no --new-session: the kernel must stay in the process group jupyter_client signals, or
        # interrupting a cell that ran over its time limit would not reach it (no tty is shared)
        "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
        "--ro-bind", "/etc", "/etc",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/dev/shm",
        "--perms", "1777", "--tmpfs", "/tmp",
    ]
    for name in ("bin", "lib", "lib64", "sbin"):
        link = Path("/") / name
        if link.is_symlink():
            argv += ["--symlink", str(Path(link.readlink())), str(link)]
        elif link.is_dir():
            argv += ["--ro-bind", str(link), str(link)]
    readonly = [p for p in [*_python_paths(), *_package_paths(), *box.readonly] if p.exists()]
    writable = [box.scratch, box.runtime]
    for parent in _ancestors([*readonly, *writable]):
        if parent == Path("/tmp") or parent.parts[1] in ("usr", "etc", "proc", "dev", "bin", "lib", "lib64", "sbin"):
            continue
        argv += ["--perms", "0755", "--dir", str(parent)]
    for path in readonly:
        argv += ["--ro-bind", str(path), str(path)]
    for path in writable:
        argv += ["--bind", str(path), str(path)]
    # chapter data files inside scratch stay read-only: the kernel cannot rewrite what the tests read
    for item in sorted(box.scratch.iterdir()) if box.scratch.is_dir() else []:
        if item.is_file() and not item.name.startswith("."):
            argv += ["--ro-bind", str(item), str(item)]
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(box.scratch),
        "TMPDIR": "/tmp",
        "MPLCONFIGDIR": str(box.scratch / ".config" / "matplotlib"),
        "XDG_CACHE_HOME": str(box.scratch / ".cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        **box.env,
    }
    argv += ["--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if box.is_rootless:  # already unprivileged inside its user namespace, with no capabilities
        drop = [t["setpriv"], "--no-new-privs"]
    else:
        drop = [
            t["setpriv"],
            f"--reuid={box.uid}", f"--regid={box.uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
        ]
    argv += ["--chdir", str(box.scratch)]
    if box.startup and inner[-2:] == ["-f", "{connection_file}"]:
        inner = [*inner, *[f"--IPKernelApp.exec_lines={line}" for line in box.startup]]
    if "{connection_file}" in inner and not box.is_rootless:
        # jupyter_client writes the connection file 0600 as the grader: hand it to the slot's uid first
        # (still root inside the sandbox, which sees nothing but the paths above), then drop privileges
        shell = 'chown {uid}:{uid} "$1" && exec "$@"'.replace("{uid}", str(box.uid))
        tail = [a if a != "{connection_file}" else "{connection_file}" for a in inner]
        argv += ["/bin/sh", "-c", shell.replace('exec "$@"', 'shift && exec "$@"'), "sh", "{connection_file}", *drop, *tail]
    else:
        argv += [*drop, *inner]
    return argv


def prepare(box: Sandbox, data_files: list[Path] = (), mpl_cache: Path | None = None) -> None:
    """Create the scratch and runtime folders (owned by the slot's uid) and copy the chapter's data files."""
    import os

    for folder in (box.scratch, box.runtime):
        folder.mkdir(parents=True, exist_ok=True)
    for src in data_files:
        shutil.copy2(src, box.scratch / src.name)
    mpl = box.scratch / ".config" / "matplotlib"
    mpl.mkdir(parents=True, exist_ok=True)
    if mpl_cache is not None and mpl_cache.is_dir():
        for item in mpl_cache.iterdir():
            if item.is_file():
                shutil.copy2(item, mpl / item.name)
    if box.is_rootless:  # the kernel runs as this user: its files are already its own
        for item in box.scratch.iterdir():
            if item.is_file() and not item.name.startswith("."):
                item.chmod(0o444)
        box.runtime.chmod(0o700)
        return
    for folder in (box.scratch, box.runtime):
        for dirpath, dirnames, filenames in os.walk(folder):
            os.chown(dirpath, box.uid, box.uid)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if Path(path).parent == box.scratch and not name.startswith("."):
                    continue  # data files stay root's and read-only
                os.chown(path, box.uid, box.uid)
    box.runtime.chmod(0o700)


def write_kernelspec(box: Sandbox, jupyter_path: Path) -> Path:
    """A ``python3`` kernelspec under ``jupyter_path/kernels`` whose argv is the sandboxed kernel."""
    inner = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_dir = jupyter_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": kernel_argv(box, inner), "display_name": "Python 3 (sandboxed grader)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def build_mpl_cache(dest: Path) -> Path:
    """Build matplotlib's font cache once on the trusted side, so each sandbox starts with it."""
    import os
    import subprocess

    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"],
        env={**os.environ, "MPLCONFIGDIR": str(dest)},
        capture_output=True,
        check=False,
    )
    return dest
