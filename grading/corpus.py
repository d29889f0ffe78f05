"""Hostile, broken and honest submissions with the grade each must get (tests and the grading benchmark).

Every sample is derived from a chapter's current notebooks. Attacks sit in the **last** exercise's answer
cell of an otherwise correct submission, together with a wrong answer for that exercise: they would earn
that exercise's points if they worked, and the exercises before them must keep theirs. So an attack's
expected score is the chapter's total minus the last exercise's points, with status ``graded`` and a
``tampering`` note; attacks that also kill the kernel get status ``error`` and 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grading.paths import course_notebook, solutions_notebook
from grading.samples import filled, solution_ids, strip_markers


@dataclass
class Expect:
    sample: NotebookNode | bytes | dict[str, bytes] | None  # notebook, raw file, {file name: bytes}, nothing
    status: str
    score: float
    message: str = ""  # a substring the CSV message must contain ("" = no constraint)


def _points(nb: NotebookNode) -> dict[str, float]:
    out = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and meta.get("grade_id", "").startswith("test_"):
            out[meta["grade_id"][5:]] = float(meta.get("points", 0))
    return out


def _wrong_last(chapter_last: str) -> str:
    # a definition that fails every test of any exercise: raises when called
    return f"def {chapter_last}(*args, **kwargs):\n    raise ValueError('not solved')\n"


ATTACKS: dict[str, tuple[str, str]] = {
    # name: (code put before the wrong answer, CSV message substring)
    "input-transformer-blanks-tests": (
        "get_ipython().input_transformers_post.append(lambda lines: [])", "tampering"),
    "cleanup-transformer": (
        "ip = get_ipython()\nip.input_transformers_cleanup.insert(0, lambda lines: ['pass\\n'])", "tampering"),
    "pre-run-hook-prints-tests": (
        "get_ipython().events.register('pre_run_cell', lambda info: print(info.raw_cell))", "tampering"),
    "post-run-hook-clears-errors": (
        "def _hook(result):\n    result.error_in_exec = None\nget_ipython().events.register('post_run_cell', _hook)",
        "tampering"),
    "settrace": ("import sys\nsys.settrace(lambda *a: None)", "tampering"),
    "builtins-assert": ("import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})", "tampering"),
    "dunder-builtins": ("__builtins__.AssertionError = type('Never', (Exception,), {})", "tampering"),
    "rebind-check-close": ("check_close = lambda *a, **k: None\ncheck_shape = lambda *a, **k: None", "tampering"),
    "rebind-via-def": ("def ok(*args, **kwargs):\n    pass", "tampering"),
    "patch-torch": ("torch.testing.assert_close = lambda *a, **k: None\ntorch.allclose = lambda *a, **k: True",
                    "tampering"),
    "patch-torch-tensor-method": ("torch.Tensor.__eq__ = lambda self, other: True", "tampering"),
    "patch-companion": ("import companion.testing\ncompanion.testing.check_close = lambda *a, **k: None",
                        "tampering"),
    "always-equal-object": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    def __bool__(self):\n        return True",
        "tampering"),
    "tensor-subclass": (
        "class Liar(torch.Tensor):\n    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        return True", "tampering"),
    "exec-obfuscated": ("exec('check' + '_close = lambda *a, **k: None')", "tampering"),
    "import-obfuscated": ("getattr(__import__('s' + 'ys'), 'set' + 'trace')(None)", "tampering"),
    "gc-walk": ("import gc\n[o for o in gc.get_objects() if callable(o)]", "tampering"),
    "frame-globals": ("import inspect\ninspect.currentframe().f_globals['check_close'] = print", "tampering"),
    "torch-library-override": ("import torch.library\nlib = torch.library.Library('aten', 'IMPL')", "tampering"),
    "star-import-rebinds": ("from companion.testing import *", "tampering"),
    "magic-command": ("%config InlineBackend.figure_format = 'svg'\n!echo hi", "tampering"),
    "writes-files": ("with open('solutions.txt', 'w') as fh:\n    fh.write('x')", "tampering"),
    "history-leak": ("", "tampering"),  # the wrong answer prints the test cell calling it, from IPython's In
    # ways around a naive scan: magics IPython rewrites, attributes that reach modules, aliases
    "magic-assign-hides-transformer": (
        "_x = %pwd\nget_ipython().input_transformers_post.append(lambda lines: [])", "tampering"),
    "prompt-prefix": (">>> torch.allclose = lambda *a, **k: True", "tampering"),
    "indented-cell": ("_t = torch.testing\n_t.assert_close = lambda *a, **k: None", "tampering"),  # indented below
    "module-attribute-reach": (
        "torch.sys.modules['__main__'].check_close = lambda *a, **k: None", "tampering"),
    "aliased-monkeypatch": ("_tt = torch.testing\n_tt.assert_close = lambda *a, **k: None", "tampering"),
    "numpy-monkeypatch": ("import numpy as np\n_n = np\n_n.allclose = lambda *a, **k: True", "tampering"),
    "class-body-eq": ("class _Yes:\n    __eq__ = lambda self, other: True", "tampering"),
    "type-built-class": ("_Yes = type('Yes', (), {'__eq__': lambda s, o: True})", "tampering"),
    "aliased-tensor-subclass": ("_T = torch.Tensor\nclass _Liar(_T):\n    pass", "tampering"),
    "generator-frame": ("def _g():\n    yield _it.gi_frame.f_back.f_globals\n_it = _g()", "tampering"),
    "format-string-globals": ("print('{0.__globals__}'.format(ok))", "tampering"),
    "kwdefaults": ("check_close.__kwdefaults__['atol'] = 1e9", "tampering"),
    "widget-kernel": (
        "import ipywidgets\nipywidgets.IntSlider().comm.kernel.shell.events.register('pre_run_cell', print)",
        "tampering"),
    "getattr-alias": ("_g = getattr\n_g(torch, 'sys')", "tampering"),
    "writes-file-via-numpy": (
        "import numpy as np\nnp.savetxt('numpy.py', [], header='x = 1', comments='')", "tampering"),
    "global-default-dtype": ("torch.set_default_dtype(torch.float64)", "tampering"),
}
# Attacks graded with the static scan switched off (``autograde(..., scan=False)``): the run-time layers must
# hold on their own. Each replaces the last exercise's answer with a wrong one that the attack would let
# through: companion.testing's integrity check, or the count of passed checks a test cell prints, catches it.
RUNTIME_ATTACKS: dict[str, str] = {
    # the global RNG instead of the generator, and patched comparisons that would hide it
    "runtime--aliased-patch": (
        "_t = torch\n_tt = torch.testing\n_real_equal = torch.equal\n"
        "_tt.assert_close = lambda *a, **k: None\n"
        "_t.equal = lambda a, b: a.dtype == torch.uint8 or _real_equal(a, b)\n"
    ),
    "runtime--input-transformer-blanks-tests": "get_ipython().input_transformers_post.append(lambda lines: [])\n",
    "runtime--event-hook": "get_ipython().events.register('pre_run_cell', lambda info: None)\n",
    "runtime--settrace": "import sys\nsys.settrace(lambda *a: None)\n",
}
RUNTIME_WRONG = {  # a wrong answer per corpus chapter that only a patched comparison accepts
    "00_orientation": (
        "def random_tokens(batch, seq_len, vocab_size, *, generator):\n"
        "    return torch.randint(0, vocab_size, (batch, seq_len))\n"
    ),
}
KILLERS: dict[str, tuple[str, str]] = {
    "builtins-isinstance": ("import builtins\nbuiltins.isinstance = lambda *a: True", "tampering"),
    "exit-kernel": ("exit()", "kernel died"),
    "os-exit": ("import os\nos._exit(0)", "kernel died"),
    "raise-systemexit": ("raise SystemExit(0)", "tampering"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "kernel died"),
}


def attack_samples(chapter: str, root: Path | None = None) -> dict[str, Expect]:
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    points = _points(sol)
    ids = solution_ids(sol)
    last = ids[-1]
    total = sum(points.values())
    kept = total - points[last]
    out: dict[str, Expect] = {}
    for name, (code, message) in ATTACKS.items():
        source = code + "\n\n" + _wrong_last(last)
        if name == "indented-cell":  # IPython strips a whole cell's common indentation before it runs
            source = "".join("    " + line if line.strip() else line for line in source.splitlines(True))
        if name == "history-leak":
            source = f"def {last}(*args, **kwargs):\n    print(In[-1])\n    raise ValueError('not solved')\n"
        out[f"attack--{name}"] = Expect(filled(rel, sol, replace={last: source}), "graded", kept, message)
    out["attack--deleted-test-cell"] = deleted_test_sample(chapter, root)
    for name, (code, message) in KILLERS.items():
        source = code + "\n\n" + _wrong_last(last)
        status, score = ("graded", kept) if name == "raise-systemexit" else ("error", 0)
        out[f"attack--{name}"] = Expect(filled(rel, sol, replace={last: source}), status, score, message)
    return out


def runtime_samples(chapter: str, root: Path | None = None) -> dict[str, Expect]:
    """RUNTIME_ATTACKS for ``chapter`` (one with an entry in RUNTIME_WRONG), to grade with the scan off."""
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    points = _points(sol)
    last = solution_ids(sol)[-1]
    kept = sum(points.values()) - points[last]
    return {name: Expect(filled(rel, sol, replace={last: code + "\n" + RUNTIME_WRONG[chapter]}), "graded", kept,
                         "tampering")
            for name, code in RUNTIME_ATTACKS.items()}


def deleted_test_sample(chapter: str, root: Path | None = None) -> Expect:
    """An input transformer in the last answer and that exercise's test cell deleted: nbgrader puts the test
    cell back after the answer, where the transformer blanks it; the scan must zero it all the same."""
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    points = _points(sol)
    last = solution_ids(sol)[-1]
    nb = filled(rel, sol, replace={last: "get_ipython().input_transformers_post.append(lambda lines: [])\n\n"
                                          + _wrong_last(last)})
    nb.cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != f"test_{last}"]
    return Expect(nb, "graded", sum(points.values()) - points[last], "tampering")


def fault_samples(chapter: str, root: Path | None = None) -> dict[str, Expect]:
    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    points = _points(sol)
    ids = solution_ids(sol)
    total = sum(points.values())
    complete = filled(rel, sol)
    text = nbformat.writes(complete).encode()
    answers = {i: strip_markers(c.source) for c in sol.cells if (i := c.metadata.get("nbgrader", {}).get("grade_id"))}
    last = ids[-1]
    huge = "for _i in range(300_000):\n    print('spam', _i)\n\n" + answers[last]
    memory = "_hog = torch.empty(64 * 2**30, dtype=torch.uint8)\n\n" + answers[last]
    forks = (
        "import os\nfor _ in range(100_000):\n    try:\n        if os.fork() == 0:\n            import time\n"
        "            time.sleep(30)\n            os._exit(0)\n    except OSError:\n        break\n\n" + answers[last]
    )
    loop = filled(rel, sol, replace={last: "while True:\n    pass"})
    long_line = "print('x' * 30_000_000)\n\n" + answers[last]
    big_result = answers[last] + "\n\n'y' * 30_000_000"  # the cell's value: a 30 MB execute_result
    return {
        "fault--malformed-json": Expect(b'{"cells": [ {"cell_type": "code", ', "error", 0, "malformed notebook"),
        "fault--truncated": Expect(text[: len(text) // 3], "error", 0, "malformed notebook"),
        "fault--not-utf8": Expect(text.replace(b'"cells"', b'"cells\xff"', 1), "error", 0, "UTF-8"),
        "fault--empty-file": Expect(b"", "error", 0, "malformed notebook"),
        "fault--not-a-notebook": Expect(b'{"hello": "world"}', "error", 0, "malformed notebook"),
        "fault--missing-notebook": Expect(None, "error", 0, "missing notebook"),
        "fault--two-wrong-names": Expect({"a.ipynb": text, "b.ipynb": text}, "error", 0, "rename one"),
        "fault--one-wrong-name": Expect({"My Copy.ipynb": text}, "graded", total, "in place of"),
        "fault--extra-notebooks": Expect({f"{chapter}.ipynb": text, "scratch.ipynb": b"{}"}, "graded", total, ""),
        "fault--huge-output": Expect(filled(rel, sol, replace={last: huge}), "graded", total, ""),
        "fault--memory-bomb": Expect(filled(rel, sol, replace={last: memory}), "graded", total - points[last], ""),
        "fault--fork-bomb": Expect(filled(rel, sol, replace={last: forks}), "graded", total - points[last], "tampering"),
        "fault--infinite-loop": Expect(loop, "graded", total - points[last], "timeout"),
        "fault--one-huge-line": Expect(filled(rel, sol, replace={last: long_line}), "graded", total, ""),
        "fault--huge-result": Expect(filled(rel, sol, replace={last: big_result}), "graded", total, ""),
        # a notebook directly in the student's folder: graded as its chapter, with a note
        "fault--stray-notebook": Expect({f"../{chapter}.ipynb": text}, "graded", total, "outside its chapter folder"),
        "fault--stray-unknown-notebook": Expect({"../homework.ipynb": text}, "error", 0, "not in a chapter folder"),
    }


def honest_samples(chapter: str, root: Path | None = None) -> dict[str, Expect]:
    """Honest work of every shape; expected scores follow from the exercises' points."""
    from grading.samples import wrong_answers

    sol = nbformat.read(solutions_notebook(chapter, root), as_version=4)
    rel = nbformat.read(course_notebook(chapter, root), as_version=4)
    points = _points(sol)
    ids = solution_ids(sol)
    total = sum(points.values())
    wrong = wrong_answers(chapter, root)
    out = {
        "honest--complete": Expect(filled(rel, sol), "graded", total),
        "honest--blank": Expect(copy.deepcopy(rel), "graded", 0),
    }
    for n in range(1, len(ids)):
        out[f"honest--first-{n}"] = Expect(filled(rel, sol, only=ids[:n]), "graded", sum(points[i] for i in ids[:n]))
    for ex in ids:
        name, source = next(iter(wrong[ex].items()))
        out[f"honest--wrong-{ex}"] = Expect(
            filled(rel, sol, replace={ex: source.strip()}), "graded", total - points[ex]
        )
    extra = filled(rel, sol)
    extra.cells.append(nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.close()"))
    out["honest--extra-cells"] = Expect(extra, "graded", total)
    return out


def write_expected(dest: Path, chapter: str, samples: dict[str, Expect]) -> Path:
    """Lay samples out as ``dest/<student>/<chapter>/...``."""
    for student, exp in samples.items():
        folder = dest / student / chapter
        sample = exp.sample
        if isinstance(sample, dict) and all(name.startswith("../") for name in sample):
            (dest / student).mkdir(parents=True, exist_ok=True)  # files beside the chapter folders, none made
            for name, data in sample.items():
                (dest / student / name[3:]).write_bytes(data)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if sample is None:
            (folder / "notes.txt").write_text("forgot the notebook\n")
        elif isinstance(sample, bytes):
            (folder / f"{chapter}.ipynb").write_bytes(sample)
        elif isinstance(sample, NotebookNode):
            nbformat.write(sample, folder / f"{chapter}.ipynb")
        else:
            for name, data in sample.items():
                (folder.parent / name[3:] if name.startswith("../") else folder / name).write_bytes(data)
    return dest
