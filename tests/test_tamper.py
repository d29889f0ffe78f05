"""The static tampering scan (grading.tamper): reference solutions scan clean, typical attacks are found.

The whole-pipeline view (a sandboxed batch of attacks and honest submissions) is tests/test_adversarial.py;
this file checks the scan on its own, fast, for every chapter.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from grading.paths import chapters, course_notebook, solutions_notebook
from grading.samples import filled, wrong_answers
from grading.tamper import affected_tests, leaked_lines, scan


def _read(path):
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module", params=chapters())
def notebooks(request):
    name = request.param
    return name, _read(course_notebook(name)), _read(solutions_notebook(name))


def _first_solution_cell(nb) -> int:
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))


def _with_answer(nb, source: str):
    """The notebook with its first answer cell replaced by ``source``."""
    nb = copy.deepcopy(nb)
    nb.cells[_first_solution_cell(nb)].source = source
    return nb


def test_reference_solutions_scan_clean(notebooks):
    _, release, solutions = notebooks
    assert scan(solutions, release) == []


def test_unsolved_release_scans_clean(notebooks):
    _, release, _ = notebooks
    assert scan(release, release) == []


@pytest.mark.parametrize("attack, expect", [
    ("import builtins\nbuiltins.print = len", "builtins"),
    ("get_ipython().input_transformers_post.append(lambda lines: [])", "get_ipython"),
    ("import sys\nsys.settrace(None)", "sys"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "torch"),
    ("class Yes(float):\n    def __eq__(self, other):\n        return True", "__eq__"),
    ("raise SystemExit", "SystemExit"),
    ("exec('1')", "exec"),
    ("open('grades.csv', 'w')", "open"),
    ("%load_ext autoreload", "magic"),
    ("import os\nos._exit(0)", "os"),
])
def test_attacks_are_found(notebooks, attack, expect):
    _, release, _ = notebooks
    findings = scan(_with_answer(release, attack), release)
    assert findings, f"nothing found in {attack!r}"
    assert findings[0].cell == _first_solution_cell(release)
    assert any(expect.lower() in f.what.lower() for f in findings), [f.what for f in findings]


# Ways around a naive scan, each once confirmed to get past an earlier version of it (a review of the
# grader): IPython rewrites magics, help and prompts; modules re-export sys and os; aliases; class bodies;
# type(); frames through generators; format strings; ipywidgets' comm; global torch state; file writes.
BYPASSES = [
    "_x = %pwd\nget_ipython().input_transformers_post.append(lambda lines: [])",
    "_x = !true\nprint(1)",
    "import builtins; builtins.isinstance = lambda *a: True\nlen?",
    ">>> torch.allclose = lambda *a, **k: True",
    "    import sys\n    sys.settrace(None)",
    "torch.sys.modules['__main__'].check_close = lambda *a, **k: None",
    "getattr(torch.sys.modules['IPython'].get_ipython(), 'input_transformers_post').append(lambda lines: [])",
    "import typing\ntyping.sys.modules['builtins'].AssertionError = ZeroDivisionError",
    "torch.os.kill(torch.os.getpid(), 9)",
    "g = getattr\ng(ok, 'x')",
    "v = vars\nv(torch)['allclose'] = print",
    "import operator\noperator.attrgetter('__glo' + 'bals__')(ok)['check_close'] = print",
    "import companion.testing as ct\nct.signal.signal(ct.signal.SIGALRM, ct.signal.SIG_IGN)",
    "tt = torch.testing\ntt.assert_close = lambda *a, **k: None",
    "t = torch\nt.allclose = lambda *a, **k: True",
    "T = torch.Tensor\nT.equal = lambda *a: True",
    "import numpy as np\nn = np\nn.allclose = lambda *a, **k: True",
    "import numpy as np\n[np][0].allclose = lambda *a, **k: True",
    "class A:\n    __eq__ = lambda self, other: True",
    "A = type('A', (), {'__eq__': lambda s, o: True})",
    "class B:\n    __torch_function__ = classmethod(lambda *a, **k: True)",
    "T = torch.Tensor\nclass L(T):\n    pass",
    "from torch import Tensor as Q\nclass L(Q):\n    pass",
    "import numpy as np\nnp.savetxt('evil.py', [], header='import os', comments='')",
    "torch.save({}, 'x.pt')",
    "def f():\n    yield g.gi_frame.f_back.f_globals\ng = f()",
    "print('{0.__globals__[check_close]}'.format(ok))",
    "print('{0.gi_frame.f_back}'.format(x))",
    "ok.__kwdefaults__ = {}",
    "check_close.__defaults__",
    "try:\n    pass\nexcept Exception as check_close:\n    pass",
    "import ipywidgets\nipywidgets.IntSlider().comm.kernel.shell.events.register('pre_run_cell', print)",
    "torch.set_default_dtype(torch.float16)",
    "torch.nn.modules.module.register_module_forward_hook(lambda *a: None)",
    "import contextlib\ncontextlib.redirect_stdout(None).__enter__()",
    "x = torch.load(obj, weights_only=False)",
    "class M(type):\n    pass\nclass A(metaclass=M):\n    pass",
    "del ok",
    "import typing\ntyping.get_type_hints(f)",
    "f = lambda: torch.testing\nf().assert_close = None",
    "import functools\nfunctools.partial(setattr, torch, 'allclose')(print)",
    "%%capture\nx = 1",
    "import time as check_close",
    "from companion.testing import _snapshot",
    "import companion\ncompanion.testing._SNAPSHOT.clear()",
    "cm.EXERCISE_OF = {}",
]


@pytest.mark.parametrize("attack", BYPASSES)
def test_known_bypasses_are_found(attack):
    name = chapters()[0]
    release = _read(course_notebook(name))
    findings = scan(_with_answer(release, attack), release)
    assert findings, f"nothing found in {attack!r}"


# wrong answers the scan flags on purpose: a student who writes them is reported, and that is right
SCAN_FLAGGED = {("04_circuits", "evaluate_formula", "python_eval")}  # Python's eval() on the formula


def test_wrong_answers_scan_clean(notebooks):
    """A plausible wrong answer must cost its own exercise only, not be taken for tampering."""
    name, release, solutions = notebooks
    flagged = []
    for exercise, variants in wrong_answers(name).items():
        for variant, source in variants.items():
            findings = scan(filled(release, solutions, replace={exercise: source.strip()}), release)
            if findings and (name, exercise, variant) not in SCAN_FLAGGED:
                flagged.append(f"{exercise}/{variant}: {findings[0].what}")
    assert not flagged, flagged


def test_unchanged_course_cells_are_trusted_edited_ones_are_not():
    name = "02_rope"
    release = _read(course_notebook(name))
    index = next(i for i, c in enumerate(release.cells) if "model.scaling =" in c.source)
    assert scan(release, release) == []  # the course's own cell sets an attribute: trusted as released
    edited = copy.deepcopy(release)
    edited.cells[index].source += "\nmodel.scaling = None"
    assert any(f.cell == index for f in scan(edited, release))


def test_deleted_test_cell_after_tampering_is_still_zeroed():
    """nbgrader puts a deleted test cell back after its answer, where the tampering runs before it."""
    name = chapters()[0]
    release = _read(course_notebook(name))
    last_answer = max(i for i, c in enumerate(release.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    gid = release.cells[last_answer].metadata.nbgrader["grade_id"]
    hostile = copy.deepcopy(release)
    hostile.cells[last_answer].source = "get_ipython().input_transformers_post.append(lambda lines: [])"
    hostile.cells = [c for c in hostile.cells if c.metadata.get("nbgrader", {}).get("grade_id") != f"test_{gid}"]
    findings = scan(hostile, release)
    assert findings
    assert affected_tests(hostile, findings[0].cell) == []  # the submission alone shows no test after it
    assert f"test_{gid}" in affected_tests(hostile, findings[0].cell, release)
    tests = [c.metadata.nbgrader["grade_id"] for c in release.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert tests[0] not in affected_tests(hostile, findings[0].cell, release)  # earlier exercises keep theirs


def test_leak_check_sees_through_spacing_and_reversal():
    secret = {"check_close('hidden', _out, torch.softmax(_big, -1))"}
    assert leaked_lines("x " + "check_close( 'hidden',_out, torch.softmax(_big,-1))", secret)
    assert leaked_lines(list(secret)[0][::-1], secret)
    assert not leaked_lines("nothing here", secret)
    assert not leaked_lines(list(secret)[0], secret, own=list(secret)[0])


def test_runtime_check_is_what_stops_an_aliased_patch(monkeypatch):
    """The run-time layer on its own, in this process: the attack below passes the orientation chapter's
    random_tokens test with a wrong answer when the integrity check is off, and fails it when it is on."""
    import torch

    import companion.testing as ct
    from grading.corpus import RUNTIME_ATTACKS, RUNTIME_WRONG

    sol = _read(solutions_notebook("00_orientation"))
    test = next(c.source for c in sol.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_random_tokens")
    test = test.replace("### BEGIN HIDDEN TESTS", "").replace("### END HIDDEN TESTS", "")
    attack = RUNTIME_ATTACKS["runtime--aliased-patch"] + RUNTIME_WRONG["00_orientation"]
    originals = (torch.testing.assert_close, torch.equal)

    def run() -> None:
        ns = {"torch": torch, **{n: getattr(ct, n) for n in ct.__all__}}
        try:
            exec(attack, ns)
            exec(test, ns)
        finally:
            torch.testing.assert_close, torch.equal = originals

    monkeypatch.setattr(ct, "_guard", lambda: None)
    run()  # the wrong answer passes every check: the attack works when nothing checks at run time
    monkeypatch.undo()
    assert ct.integrity_problems() == []
    with pytest.raises(ct.TamperingDetected, match="torch.testing.assert_close was replaced"):
        run()
    assert ct.integrity_problems() == []


def test_absurdly_nested_code_is_flagged_not_crashed():
    name = chapters()[0]
    release = _read(course_notebook(name))
    deep = "x = " + "-" * 50_000 + "1"  # a unary chain deeper than Python's recursion limit
    findings = scan(_with_answer(release, deep), release)
    assert any("nested too deeply" in f.what for f in findings), [f.what for f in findings]


def test_scans_in_parallel_threads_agree():
    """autograde --jobs N scans on several threads; CPython 3.11's ast.parse is not thread-safe there."""
    name = chapters()[0]
    release, solutions = _read(course_notebook(name)), _read(solutions_notebook(name))
    hostile = _with_answer(release, "import builtins\nbuiltins.len = lambda x: 0")
    jobs = [solutions, hostile] * 40
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda nb: scan(nb, release), jobs))
    assert all(r == [] for r in results[0::2])
    assert all(r and r == results[1] for r in results[1::2])
