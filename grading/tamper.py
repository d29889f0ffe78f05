"""Find code in a submission that tries to change how the graders run (checked on the trusted side).

nbgrader runs the tests in the same kernel as the student's code, so code in an answer cell can change
what later test cells do (shared/PITFALLS.md item 10). The sandbox (:mod:`grading.sandbox`) keeps that code
away from the grader's files; this module keeps it away from the tests, in two layers:

1. **Before grading**, :func:`scan` reads every cell the student wrote (every code cell that is not one of
   the release's locked or test cells, and not a course cell left exactly as released) *as IPython will
   run it*: the source goes through IPython's own input transformation first (magics, ``!`` commands,
   ``?`` help, ``>>>`` prompts, indented cells), and a cell that still does not parse is one IPython
   refuses to run. It reports, deny by default, what exercise solutions never need and tampering does:

   * reaching the interpreter, IPython or the system: imports outside an allow-list; the names
     ``get_ipython``, ``__builtins__``, ``In``/``Out`` and IPython's history; attributes that lead there from
     any object (``torch.sys``, ``widget.comm.kernel``, ``.f_back``, ``.gi_frame``, ``.events``...);
     ``exec``/``eval``/``__import__``/``getattr``/``vars``/``globals``/``open`` called with a computed name,
     or taken as a value (``g = getattr``); ``type(name, bases, namespace)``;
   * changing objects the tests use: any attribute assignment or deletion except on ``self``
     (``torch.allclose = ...``, ``t = torch.testing; t.assert_close = ...``), private attributes except on
     ``self``, dunder attributes and dunder names (``__eq__ = ...`` in a class body, ``__globals__``,
     ``__kwdefaults__``, also inside strings and format fields), classes derived from anything but a short
     list of plain bases or the student's own classes, metaclasses, rebinding or mutating a name the
     locked cells define (``check_close = ...``, ``del ok``, ``except E as check_close``), in-place calls on
     such names, global torch state (``set_default_dtype``, global module hooks);
   * files and the kernel itself: writing or loading files (``torch.save``, ``np.savetxt``, ``savefig``,
     ``torch.load``), ``exit``, ``raise SystemExit``.
2. **After grading**, :func:`leaked_lines` finds hidden-test lines in what would go back to the student.

Each finding names the cell. The caller gives 0 to every exercise whose test cell can run after the first
finding (:func:`affected_tests`) and reports it in the CSV. Reference solutions, wrong answers and releases
must scan clean: ``tests/test_tamper.py`` checks every chapter's.

A static scan of Python is not a proof: it raises the bar. Behind it, :mod:`companion.testing` checks at
run time, inside every check a test cell calls, that the functions and hooks the tests rely on are the ones
the locked setup cell saw (:func:`companion.testing.integrity_problems`), and the sandbox bounds what any
code can reach. See the README's instructor section.
"""

from __future__ import annotations

import ast
import re
import string
import threading
from dataclasses import dataclass

from nbformat import NotebookNode

ALLOWED_IMPORTS = {
    "torch", "numpy", "math", "cmath", "random", "statistics", "itertools", "functools",
    "collections", "heapq", "bisect", "typing", "dataclasses", "enum", "fractions", "decimal", "string",
    "re", "copy", "time", "matplotlib", "tqdm", "ipywidgets", "companion", "einops", "numbers", "abc",
    "contextlib", "textwrap", "pprint", "__future__",
}
FORBIDDEN_TORCH = {"_C", "library", "ops", "overrides", "_dynamo", "_inductor", "utils.cpp_extension",
                   "_tensor", "_ops", "_refs", "_prims", "hub", "package", "multiprocessing", "utils.tensorboard"}
# builtins that reach the interpreter: flagged when called, except getattr/hasattr with a harmless constant
# name, and flagged wherever they are taken as a value (`g = getattr`, `map(setattr, ...)`)
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "setattr", "delattr",
                   "breakpoint", "exit", "quit", "get_ipython", "open", "input", "memoryview", "help"}
REFLECTION = FORBIDDEN_CALLS | {"getattr", "hasattr", "type"}
FORBIDDEN_NAMES = {"__builtins__", "__builtin__", "builtins", "get_ipython", "__loader__", "__spec__",
                   "__main__",
                   # IPython's history: a function the tests call could read (and print) the test cell
                   "In", "Out", "_ih", "_oh", "_dh"}
# more of IPython's history, flagged when read in a cell that never assigns them (`for _ in ...` is fine)
HISTORY = re.compile(r"^(_|__|___|_i|_ii|_iii|_i\d+|_o\d+|_\d+)$")
FORBIDDEN_RAISES = {"SystemExit", "KeyboardInterrupt", "BaseException", "GeneratorExit"}
# attributes that lead, from any object, to the interpreter, IPython, the file system or global state
FORBIDDEN_ATTRS = {
    # modules re-exported by other modules (torch.sys, typing.sys, companion.testing.signal, np.ctypeslib)
    "sys", "os", "builtins", "importlib", "subprocess", "signal", "ctypes", "ctypeslib", "inspect", "gc",
    "IPython", "ipykernel", "traitlets", "zmq", "jupyter_client", "threading", "multiprocessing", "posix",
    "pty", "socket", "shutil", "pathlib", "io", "marshal", "pickle", "atexit", "faulthandler", "resource",
    "runpy", "codeop", "pdb", "bdb", "types", "sysconfig", "f2py", "Thread", "Timer",
    # frames, code objects, tracebacks
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "gi_frame", "gi_code", "cr_frame",
    "cr_code", "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "co_consts", "co_names",
    "settrace", "setprofile", "gettrace", "exc_info", "currentframe", "getsource", "getsourcelines",
    "get_referrers", "get_referents", "get_objects",
    # IPython and the kernel (ipywidgets reach it through .comm)
    "get_ipython", "input_transformers_post", "input_transformers_cleanup", "input_transformer_manager",
    "ast_transformers", "events", "showtraceback", "showsyntaxerror", "run_cell", "run_line_magic",
    "run_cell_magic", "run_code", "user_ns", "user_global_ns", "history_manager", "displayhook",
    "display_pub", "display_formatter", "excepthook", "set_custom_exc", "kernel", "shell", "comm",
    "comm_manager",
    # reflection helpers that take attribute names as strings, or evaluate strings
    "attrgetter", "methodcaller", "import_module", "reload", "get_type_hints", "ForwardRef",
    # files: writing what tests might read, loading pickles (which run code)
    "save", "savez", "savez_compressed", "savetxt", "tofile", "savefig", "write_text", "write_bytes",
    "memmap", "open_memmap", "from_file", "load", "loads", "fromfile", "dump", "hub", "package",
    "tensorboard",
    # global torch state the tests compute with
    "set_default_dtype", "set_default_device", "set_default_tensor_type", "register_module_forward_hook",
    "register_module_forward_pre_hook", "register_module_full_backward_hook",
    "register_module_full_backward_pre_hook", "register_module_backward_hook",
    "register_module_buffer_registration_hook", "register_module_module_registration_hook",
    "register_module_parameter_registration_hook",
}
# dunders a student may define (def __init__...) or name in a class body
ALLOWED_DUNDER_DEFS = {"__init__", "__call__", "__repr__", "__str__", "__len__", "__getitem__", "__iter__",
                       "__next__", "__post_init__", "__enter__", "__exit__", "__contains__", "__setitem__",
                       "__hash__", "__slots__", "__all__"}
# dunders a student may read as attributes (super().__init__(...), type(self).__name__)
ALLOWED_DUNDER_ATTRS = {"__init__", "__name__", "__qualname__", "__doc__", "__class__", "__len__",
                        "__call__", "__future__"}
DUNDER = re.compile(r"__\w+__")
# plain bases a student's class may have (plus classes the student or the course defines)
ALLOWED_BASES = {
    "object", "Exception", "ValueError", "TypeError", "RuntimeError", "KeyError", "IndexError",
    "NotImplementedError", "ArithmeticError", "AssertionError", "NamedTuple", "typing.NamedTuple", "Enum",
    "IntEnum", "enum.Enum", "enum.IntEnum", "Module", "nn.Module", "torch.nn.Module", "Function",
    "autograd.Function", "torch.autograd.Function", "Generic", "typing.Generic", "Protocol", "typing.Protocol",
}
MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem", "sort",
            "reverse", "discard", "add"}
SELF_NAMES = {"self", "cls"}


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


_TRANSFORMER = None


def as_ipython_runs_it(source: str) -> str:
    """The cell's source after IPython's input transformation (what the kernel compiles), or the source
    itself where IPython is not installed."""
    global _TRANSFORMER
    with _PARSE_LOCK:
        if _TRANSFORMER is None:
            try:
                from IPython.core.inputtransformer2 import TransformerManager
            except ImportError:  # pragma: no cover - nbgrader depends on IPython
                return source
            _TRANSFORMER = TransformerManager()
        try:
            return _TRANSFORMER.transform_cell(source)
        except Exception:  # a cell IPython cannot transform is a cell it will not run
            return source


@dataclass(frozen=True)
class Finding:
    cell: int  # index in the submitted notebook
    where: str  # "cell 12 (grade id softmax)" or "cell 12"
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def _meta(cell: NotebookNode) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def _source(cell: NotebookNode) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def trusted_cells(release_nb: NotebookNode) -> dict[str, str]:
    """grade id -> source of the release's locked and test cells (nbgrader restores these before grading)."""
    return {
        _meta(c)["grade_id"]: c.source
        for c in release_nb.cells
        if c.cell_type == "code" and _meta(c).get("grade_id") and (_meta(c).get("locked") or _meta(c).get("grade"))
        and not _meta(c).get("solution")
    }


def course_cells(release_nb: NotebookNode) -> set[str]:
    """Sources of the release's plain code cells (experiments, figures): the course's code, not the student's,
    as long as they are left exactly as released."""
    return {
        _source(c).strip() for c in release_nb.cells
        if c.cell_type == "code" and not _meta(c).get("solution") and not _meta(c).get("grade")
        and not _meta(c).get("locked")
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
                elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
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


def _root_name(node: ast.AST) -> str | None:
    """The name at the root of ``a.b[c].d`` (None when the chain passes through a call or literal)."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _format_fields(text: str) -> list[str]:
    """Attribute and index parts of ``str.format`` fields in ``text`` ("{0.__globals__[x]}" -> [...])."""
    if "{" not in text:
        return []
    parts: list[str] = []
    try:
        for _, field, _, _ in string.Formatter().parse(text):
            if field:
                parts += [p for p in re.split(r"[.\[\]]", field)[1:] if p]
    except ValueError:
        return []
    return parts


class _Scanner(ast.NodeVisitor):
    def __init__(self, modules: set[str], protected: set[str], imports: dict[str, str], classes: set[str]):
        self.modules = set(modules)  # names bound to modules (imports anywhere in the notebook)
        self.protected = protected
        self.imports = imports  # protected name -> what the locked cells import under it
        self.classes = classes  # classes defined in the notebook (a student's class may derive from them)
        self.stored: set[str] = set()  # names the scanned cell assigns somewhere
        self.problems: list[str] = []
        self._calls: set[int] = set()  # ids of Name nodes that are the function of a call
        self._class_depth = 0

    def visit_Module(self, node: ast.Module) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                self.stored.add(sub.id)
            elif isinstance(sub, ast.arg):
                self.stored.add(sub.arg)
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
                self._calls.add(id(sub.func))
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
            elif alias.name in FORBIDDEN_ATTRS or _is_private(alias.name) or DUNDER.fullmatch(alias.name):
                self.flag(node, f"imports `{alias.name}` from `{module}`")
        self.generic_visit(node)

    def _check_import(self, node: ast.AST, dotted: str) -> None:
        top = dotted.split(".")[0]
        if node.__class__ is ast.ImportFrom and getattr(node, "level", 0):
            self.flag(node, "relative import")
        elif top not in ALLOWED_IMPORTS:
            self.flag(node, f"imports `{dotted}` (not needed by any exercise; it reaches the interpreter or system)")
        elif top == "torch" and self._forbidden_torch(dotted):
            self.flag(node, f"imports `{dotted}` (low-level torch API that can change how tests compute)")
        elif any(part in FORBIDDEN_ATTRS or _is_private(part) for part in dotted.split(".")[1:]):
            self.flag(node, f"imports `{dotted}`")

    @staticmethod
    def _forbidden_torch(dotted: str) -> bool:
        rest = dotted.split(".", 1)[1] if "." in dotted else ""
        return any(rest == f or rest.startswith(f + ".") for f in FORBIDDEN_TORCH)

    # names and calls
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in FORBIDDEN_NAMES or (
            HISTORY.match(name) and isinstance(node.ctx, ast.Load) and name not in self.stored
        ):
            self.flag(node, f"uses `{name}`")
        elif isinstance(node.ctx, ast.Load) and name in REFLECTION and id(node) not in self._calls:
            self.flag(node, f"takes `{name}` as a value (an alias of a reflection builtin)")
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            if name in self.protected:
                self.flag(node, f"rebinds `{name}`, which the tests use (defined in a locked cell)")
            if DUNDER.fullmatch(name) and name not in ALLOWED_DUNDER_DEFS:
                self.flag(node, f"assigns `{name}` (changes how comparisons or torch see an object)")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in FORBIDDEN_CALLS:
                self.flag(node, f"calls `{func.id}()`")
            if func.id in ("getattr", "hasattr"):
                name = node.args[1] if len(node.args) >= 2 else None
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)
                        and not name.value.startswith("_") and name.value not in FORBIDDEN_ATTRS):
                    self.flag(node, f"`{func.id}` with a computed, private or forbidden attribute name")
            if func.id == "type" and (len(node.args) + len(node.keywords)) > 1:
                self.flag(node, "builds a class with `type(name, bases, namespace)`")
        elif isinstance(func, ast.Attribute):
            root = _root_name(func.value)
            inplace = func.attr in MUTATORS or (func.attr.endswith("_") and not func.attr.endswith("__"))
            if inplace and root in self.protected and root not in self.modules:
                self.flag(node, f"changes `{root}` in place (`.{func.attr}()`), which the tests use")
            elif inplace and any(_root_name(a) in self.protected and _root_name(a) not in self.modules
                                 for a in node.args if isinstance(a, (ast.Name, ast.Attribute, ast.Subscript))):
                self.flag(node, f"passes a name the tests use to the in-place `.{func.attr}()`")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        base = node.value
        on_self = isinstance(base, ast.Name) and base.id in SELF_NAMES
        if DUNDER.fullmatch(name) and name not in ALLOWED_DUNDER_ATTRS:
            self.flag(node, f"uses the attribute `{name}`")
        elif _is_private(name) and not on_self:
            self.flag(node, f"uses the private attribute `.{name}`")
        if name in FORBIDDEN_ATTRS:
            self.flag(node, f"uses `.{name}` (reaches the interpreter, IPython, files or global state)")
        dotted = _dotted(node)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and not on_self:
            what = f"`{dotted}`" if dotted else f"an attribute `.{name}`"
            self.flag(node, f"assigns into {what} (only attributes of `self` may be set)")
        if dotted:
            root = dotted.split(".")[0]
            if root in ("torch", "th") and "." in dotted and self._forbidden_torch("torch." + dotted.split(".", 1)[1]):
                self.flag(node, f"uses `{dotted}` (low-level torch API)")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            root = _root_name(node.value)
            if root in self.protected and root not in self.modules:
                self.flag(node, f"assigns into `{root}[...]`, which the tests use")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        root = _root_name(node.target)
        if root in self.protected:
            self.flag(node, f"changes `{root}` in place, which the tests use")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            bad = sorted({d for d in DUNDER.findall(node.value)
                          if d not in ALLOWED_DUNDER_DEFS and d not in ALLOWED_DUNDER_ATTRS})
            fields = [p for p in _format_fields(node.value)
                      if p in FORBIDDEN_ATTRS or _is_private(p) or DUNDER.fullmatch(p)]
            if bad:
                self.flag(node, f"a string names `{bad[0]}`")
            elif fields:
                self.flag(node, f"a format string reaches `.{fields[0]}`")

    # definitions
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if DUNDER.fullmatch(node.name) and node.name not in ALLOWED_DUNDER_DEFS:
            self.flag(node, f"defines `{node.name}` (changes how comparisons or torch see an object)")
        if node.name in self.protected:
            self.flag(node, f"redefines `{node.name}`, which the tests use")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            dotted = _dotted(base) or ast.unparse(base)
            if dotted not in ALLOWED_BASES and dotted not in self.classes:
                self.flag(node, f"class `{node.name}` derives from `{dotted}` (allowed: plain classes, "
                                "nn.Module, autograd.Function, exceptions, NamedTuple, Enum, your own classes)")
        for keyword in node.keywords:
            self.flag(node, f"class `{node.name}` sets `{keyword.arg}=` (metaclasses change how objects behave)")
        if node.name in self.protected:
            self.flag(node, f"redefines `{node.name}`, which the tests use")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name and node.name in self.protected:
            self.flag(node, f"rebinds `{node.name}`, which the tests use (`except ... as {node.name}`)")
        self.generic_visit(node)

    def _match_name(self, node: ast.AST, name: str | None) -> None:
        if name and name in self.protected:
            self.flag(node, f"rebinds `{name}`, which the tests use (in a `match` pattern)")

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        self._match_name(node, node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        self._match_name(node, node.name)
        self.generic_visit(node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._match_name(node, node.rest)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        hit = [n for n in node.names if n in self.protected]
        if hit:
            self.flag(node, f"declares `global {', '.join(hit)}`")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.visit_Global(node)  # type: ignore[arg-type]

    def visit_Raise(self, node: ast.Raise) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in FORBIDDEN_RAISES:
            self.flag(node, f"raises `{exc.id}` (leaves the kernel or stops the grader)")
        self.generic_visit(node)


def _trees(nb: NotebookNode, *, solutions: bool) -> list[ast.Module]:
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code" or (not solutions and _meta(cell).get("solution")):
            continue
        try:
            out.append(_parse(as_ipython_runs_it(_source(cell))))
        except (SyntaxError, RecursionError):
            continue
    return out


def _imports_in(nb: NotebookNode) -> dict[str, str]:
    bound: dict[str, str] = {}
    for tree in _trees(nb, solutions=False):
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
    for tree in _trees(nb, solutions=True):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name[:1].islower():  # from torch import nn  -> nn is a module (heuristic)
                        names.add(a.asname or a.name)
    return names


def _classes_in(*nbs: NotebookNode) -> set[str]:
    return {node.name for nb in nbs for tree in _trees(nb, solutions=True) for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)}


def scan(submission: NotebookNode, release_nb: NotebookNode) -> list[Finding]:
    """Tampering constructs in the cells the student wrote, first cell first."""
    trusted = trusted_cells(release_nb)
    course = course_cells(release_nb)
    protected = protected_names(release_nb)
    modules = _modules_in(release_nb)
    imports = _imports_in(release_nb)
    classes = _classes_in(release_nb, submission)
    findings: list[Finding] = []
    for index, cell in enumerate(submission.cells):
        if cell.cell_type != "code":
            continue
        gid = _meta(cell).get("grade_id")
        if gid in trusted:
            continue  # nbgrader puts the release's own source back in this cell
        source = _source(cell)
        if not _meta(cell).get("solution") and source.strip() in course:
            continue  # a course cell, unchanged
        where = f"cell {index + 1}" + (f" (grade id {gid})" if gid else "")
        code = as_ipython_runs_it(source)
        try:
            tree = _parse(code)
        except SyntaxError:
            continue  # IPython refuses to run a cell that does not compile: it can change nothing
        except RecursionError:
            findings.append(Finding(index, where, "code nested too deeply to check"))
            continue
        if "get_ipython()" in code and "get_ipython" not in source:
            findings.append(Finding(index, where, "IPython magics, help or shell commands (`%`, `!`, `?`)"))
        scanner = _Scanner(modules, protected, imports, classes)
        try:
            scanner.visit(tree)
        except RecursionError:
            findings.append(Finding(index, where, "code nested too deeply to check"))
            continue
        findings.extend(Finding(index, where, problem) for problem in scanner.problems)
    return findings


def affected_tests(submission: NotebookNode, first_cell: int, release_nb: NotebookNode | None = None) -> list[str]:
    """Grade ids of the test cells that can run after cell ``first_cell`` of the submission: the test cells
    after it in the submission and, with ``release_nb``, the release's test cells after the last graded or
    answer cell at or before it: nbgrader puts a deleted test cell back after the cell that precedes it in
    the source, so one deleted after the tampering runs after it too (a deleted one just before it may be
    counted as well: that errs on the side of the tests)."""
    after = [
        _meta(c)["grade_id"]
        for c in submission.cells[first_cell:]
        if c.cell_type == "code" and _meta(c).get("grade") and _meta(c).get("grade_id")
    ]
    if release_nb is None:
        return after
    order = [_meta(c).get("grade_id") for c in release_nb.cells]
    tests = [_meta(c)["grade_id"] for c in release_nb.cells if _meta(c).get("grade") and _meta(c).get("grade_id")]
    anchor = -1  # release position of the last release cell (by grade id) at or before the tampering
    for cell in submission.cells[: first_cell + 1]:
        gid = _meta(cell).get("grade_id")
        if gid in order:
            anchor = max(anchor, order.index(gid))
    from_release = [t for t in tests if order.index(t) > anchor]
    rank = {t: n for n, t in enumerate(tests)}
    return sorted(set(after) | set(from_release), key=lambda t: rank.get(t, len(rank)))


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text)


def leaked_lines(text: str, secrets: set[str], own: str = "") -> list[str]:
    """Hidden-test lines that appear in ``text`` (the feedback going back to the student), leaving out lines
    the student's own cells contain (the course is open: copying a test line into your answer leaks nothing).
    Lines are matched with whitespace removed, forwards and backwards."""
    flat = _normal(text)
    flat_back = flat[::-1]
    own_flat = _normal(own)
    found = []
    for line in secrets:
        key = _normal(line)
        if key and (key in flat or key in flat_back) and key not in own_flat:
            found.append(line)
    return sorted(found)
