"""Find code in a submission that tries to change how the graders run (checked on the trusted side).

nbgrader runs the tests in the same kernel as the student's code, so code in an answer cell can change
what later test cells do (shared/PITFALLS.md item 10). The sandbox (:mod:`grading.sandbox`) keeps that code
away from the grader's files; this module keeps it away from the tests, in two layers:

1. **Before grading**, :func:`scan` reads every cell the student could have written (every code cell that is
   not one of the release's locked or test cells) and reports constructs that exercise solutions never
   need and tampering always does: reaching the interpreter or IPython (``get_ipython``, ``sys``,
   ``builtins``, ``gc``, ``inspect``, ``ctypes``, imports outside an allow-list, ``exec``/``eval``/
   ``__import__``, ``getattr`` with a computed name, ``setattr``), dunder attributes (``__eq__`` overrides,
   ``__globals__``, ``__class__``, ``__torch_function__``...), private or low-level torch APIs
   (``torch._C``, ``torch.library``, ``torch.ops``...), assigning into a module (``torch.allclose = ...``),
   rebinding a name the locked cells define (``check_close = ...``), leaving the kernel (``exit``,
   ``raise SystemExit``).
2. **After grading**, :func:`leaked_lines` finds hidden-test lines in what would go back to the student.

Each finding names the cell. The caller gives 0 to every exercise whose test cell comes after the first
finding (the tampering could have changed each of them) and reports it in the CSV. Reference solutions must
scan clean: ``tests/test_tamper.py`` checks every chapter's.

This is a deny-by-default scan of Python source, not a proof: code can still misbehave at run time in ways
a static scan cannot see (the sandbox bounds what that can reach). See the README's instructor section.
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass

from nbformat import NotebookNode

ALLOWED_IMPORTS = {
    "torch", "numpy", "math", "cmath", "random", "statistics", "itertools", "functools", "operator",
    "collections", "heapq", "bisect", "typing", "dataclasses", "enum", "fractions", "decimal", "string",
    "re", "copy", "time", "matplotlib", "tqdm", "ipywidgets", "companion", "einops", "numbers", "abc",
    "contextlib", "textwrap", "pprint", "__future__",
}
FORBIDDEN_TORCH = {"_C", "library", "ops", "overrides", "_dynamo", "_inductor", "utils.cpp_extension",
                   "_tensor", "_ops", "_refs", "_prims"}
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "setattr", "delattr",
                   "breakpoint", "exit", "quit", "get_ipython", "open", "input", "memoryview"}
FORBIDDEN_NAMES = {"__builtins__", "__builtin__", "builtins", "get_ipython", "__loader__", "__spec__",
                   # IPython's history: a function the tests call could read (and print) the test cell
                   "In", "Out", "_ih", "_oh", "_dh"}
# more of IPython's history, flagged when read in a cell that never assigns them (`for _ in ...` is fine)
HISTORY = re.compile(r"^(_|__|___|_i|_ii|_iii|_i\d+|_o\d+|_\d+)$")
FORBIDDEN_RAISES = {"SystemExit", "KeyboardInterrupt", "BaseException", "GeneratorExit"}
ALLOWED_DUNDERS = {"__init__", "__call__", "__repr__", "__str__", "__len__", "__getitem__", "__iter__",
                   "__next__", "__post_init__", "__name__", "__doc__", "__enter__", "__exit__", "__contains__",
                   "__setitem__", "__future__", "__hash__"}


# CPython 3.11 before 3.11.8 keeps ast.parse's recursion counter in shared state, so two threads parsing at
# once (autograde --jobs N scans on a thread per slot) can fail with "SystemError: AST constructor recursion
# depth mismatch" (python/cpython#106905). One parse at a time; they take microseconds.
_PARSE_LOCK = threading.Lock()


def _parse(source: str) -> ast.Module:
    """ast.parse, serialised across threads; SyntaxError as usual, RecursionError for absurd nesting."""
    with _PARSE_LOCK:
        try:
            return ast.parse(source)
        except (MemoryError, SystemError) as exc:  # the parser's own limits
            raise RecursionError(str(exc)) from None


@dataclass(frozen=True)
class Finding:
    cell: int  # index in the submitted notebook
    where: str  # "cell 12 (grade id softmax)" or "cell 12"
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def _meta(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def trusted_cells(release_nb: NotebookNode) -> dict[str, str]:
    """grade id -> source of the release's locked and test cells (nbgrader restores these before grading)."""
    return {
        _meta(c)["grade_id"]: c.source
        for c in release_nb.cells
        if c.cell_type == "code" and _meta(c).get("grade_id") and (_meta(c).get("locked") or _meta(c).get("grade"))
        and not _meta(c).get("solution")
    }


def protected_names(release_nb: NotebookNode) -> set[str]:
    """Names the locked cells bind and the test cells import: what the tests call."""
    names: set[str] = set()
    for cell in release_nb.cells:
        meta = _meta(cell)
        if cell.cell_type != "code" or meta.get("solution"):
            continue
        try:
            tree = _parse(cell.source)
        except (SyntaxError, RecursionError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and (meta.get("locked") or meta.get("grade")):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif meta.get("locked") and not meta.get("grade"):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Assign):
                    names.update(n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return {n for n in names if not n.startswith("_")}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, modules: set[str], protected: set[str], imports: dict[str, str]):
        self.modules = set(modules)  # names bound to modules (imports anywhere in the notebook)
        self.protected = protected
        self.imports = imports  # protected name -> what the locked cells import under it
        self.stored: set[str] = set()  # names the scanned cell assigns somewhere
        self.problems: list[str] = []

    def visit_Module(self, node: ast.Module) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                self.stored.add(sub.id)
            elif isinstance(sub, ast.arg):
                self.stored.add(sub.arg)
        self.generic_visit(node)

    def flag(self, node: ast.AST, what: str) -> None:
        self.problems.append(f"line {getattr(node, 'lineno', '?')}: {what}")

    # imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_import(node, alias.name)
            bound = alias.asname or alias.name.split(".")[0]
            self._check_rebind(node, bound, alias.name if alias.asname else alias.name.split(".")[0])
            self.modules.add(bound)

    def _check_rebind(self, node: ast.AST, bound: str, target: str) -> None:
        if bound in self.protected and self.imports.get(bound, target) != target:
            self.flag(node, f"rebinds `{bound}` (which the tests use) to `{target}`")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self._check_import(node, module)
        for alias in node.names:
            self._check_import(node, f"{module}.{alias.name}")
            self._check_rebind(node, alias.asname or alias.name, f"{module}.{alias.name}")
            if alias.name == "*":
                self.flag(node, f"`from {module} import *` (could rebind names the tests use)")
        self.generic_visit(node)

    def _check_import(self, node: ast.AST, dotted: str) -> None:
        top = dotted.split(".")[0]
        if node.__class__ is ast.ImportFrom and getattr(node, "level", 0):
            self.flag(node, "relative import")
        elif top not in ALLOWED_IMPORTS:
            self.flag(node, f"imports `{dotted}` (not needed by any exercise; it reaches the interpreter or system)")
        elif top == "torch" and self._forbidden_torch(dotted):
            self.flag(node, f"imports `{dotted}` (low-level torch API that can change how tests compute)")

    @staticmethod
    def _forbidden_torch(dotted: str) -> bool:
        rest = dotted.split(".", 1)[1] if "." in dotted else ""
        return any(rest == f or rest.startswith(f + ".") for f in FORBIDDEN_TORCH)

    # names and calls
    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES or (
            HISTORY.match(node.id) and isinstance(node.ctx, ast.Load) and node.id not in self.stored
        ):
            self.flag(node, f"uses `{node.id}`")
        if isinstance(node.ctx, (ast.Store, ast.Del)) and node.id in self.protected:
            self.flag(node, f"rebinds `{node.id}`, which the tests use (defined in a locked cell)")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in FORBIDDEN_CALLS:
                self.flag(node, f"calls `{func.id}()`")
            if func.id in ("getattr", "hasattr") and not (
                len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                and not node.args[1].value.startswith("_")
            ):
                self.flag(node, f"`{func.id}` with a computed or private attribute name")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        if name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS:
            self.flag(node, f"uses the attribute `{name}`")
        dotted = _dotted(node)
        if dotted:
            root = dotted.split(".")[0]
            if root in self.modules and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.flag(node, f"assigns into the module attribute `{dotted}` (monkeypatching)")
            if root in ("torch", "th") and self._forbidden_torch("torch." + dotted.split(".", 1)[1] if "." in dotted else "torch"):
                self.flag(node, f"uses `{dotted}` (low-level torch API)")
            elif root in self.modules and name.startswith("_") and not name.startswith("__"):
                self.flag(node, f"uses the private `{dotted}`")
        if name in ("input_transformers_post", "input_transformers_cleanup", "ast_transformers", "events",
                    "settrace", "setprofile", "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame"):
            self.flag(node, f"uses `.{name}`")
        self.generic_visit(node)

    # definitions
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("__") and node.name.endswith("__") and node.name not in ALLOWED_DUNDERS:
            self.flag(node, f"defines `{node.name}` (changes how comparisons or torch see an object)")
        if node.name in self.protected:
            self.flag(node, f"redefines `{node.name}`, which the tests use")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            dotted = _dotted(base) or ""
            if dotted.endswith("Tensor") or dotted in ("int", "float", "bool", "tuple", "list", "dict", "str"):
                self.flag(node, f"class `{node.name}` subclasses `{dotted}`")
        if node.name in self.protected:
            self.flag(node, f"redefines `{node.name}`, which the tests use")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        hit = [n for n in node.names if n in self.protected]
        if hit:
            self.flag(node, f"declares `global {', '.join(hit)}`")

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in FORBIDDEN_RAISES:
            self.flag(node, f"raises `{exc.id}` (leaves the kernel or stops the grader)")
        self.generic_visit(node)


def _imports_in(nb: NotebookNode) -> dict[str, str]:
    bound: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or _meta(cell).get("solution"):
            continue
        try:
            tree = _parse(cell.source)
        except (SyntaxError, RecursionError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for a in node.names:
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    return bound


def _modules_in(nb: NotebookNode) -> set[str]:
    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = _parse(cell.source)
        except (SyntaxError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name[:1].islower():  # from torch import nn  -> nn is a module (heuristic)
                        names.add(a.asname or a.name)
    return names


def scan(submission: NotebookNode, release_nb: NotebookNode) -> list[Finding]:
    """Tampering constructs in the cells the student could have written, first cell first."""
    trusted = trusted_cells(release_nb)
    protected = protected_names(release_nb)
    modules = _modules_in(release_nb)
    imports = _imports_in(release_nb)
    findings: list[Finding] = []
    for index, cell in enumerate(submission.cells):
        if cell.cell_type != "code":
            continue
        gid = _meta(cell).get("grade_id")
        if gid in trusted:
            continue  # nbgrader puts the release's own source back in this cell
        where = f"cell {index + 1}" + (f" (grade id {gid})" if gid else "")
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        if len(lines) != len(source.splitlines()):
            findings.append(Finding(index, where, "IPython magics or shell commands (`%`, `!`)"))
        try:
            tree = _parse("\n".join(lines))
        except SyntaxError:
            continue  # it fails on its own when run
        except RecursionError:
            findings.append(Finding(index, where, "code nested too deeply to check"))
            continue
        scanner = _Scanner(modules, protected, imports)
        try:
            scanner.visit(tree)
        except RecursionError:
            findings.append(Finding(index, where, "code nested too deeply to check"))
            continue
        findings.extend(Finding(index, where, problem) for problem in scanner.problems)
    return findings


def affected_tests(submission: NotebookNode, first_cell: int) -> list[str]:
    """Grade ids of the test cells at or after ``first_cell``: what tampering there could have changed."""
    return [
        _meta(c)["grade_id"]
        for c in submission.cells[first_cell:]
        if c.cell_type == "code" and _meta(c).get("grade") and _meta(c).get("grade_id")
    ]


def leaked_lines(text: str, secrets: set[str], own: str = "") -> list[str]:
    """Hidden-test lines that appear in ``text`` (the feedback going back to the student), leaving out lines
    the student's own cells contain (the course is open: copying a test line into your answer leaks nothing)."""
    return sorted(line for line in secrets if line and line in text and line not in own)
