"""``grading.variants`` itself: a variant that fails to define the answer cannot fall back on the reference."""

from __future__ import annotations

from grading.variants import check_variants, defined_names, report


def test_defined_names_cover_functions_assignments_and_imports():
    src = "import numpy as np\nfrom math import sqrt\ndef f(x):\n    y = 1\n    return x\nA, (B, C) = 1, (2, 3)\nD: int = 4\n"
    assert defined_names(src) == ["np", "sqrt", "f", "A", "B", "C", "D"]
    assert defined_names("def broken(:") == []


def test_broken_or_missing_definitions_are_rejected(root):
    variants = {
        "softmax": {
            "syntax_error": "def softmax(x, dim=-1:\n    return x",
            "defines_another_name": "def my_softmax(x, dim=-1):\n    return x.softmax(dim)",
            "raises": "def softmax(x, dim=-1):\n    raise NotImplementedError()",
        }
    }
    verdicts = check_variants("00_orientation", root, variants)
    by_name = {v.variant: v for v in verdicts if v.exercise == "softmax"}
    assert by_name["reference"].passed, by_name["reference"].reason
    for name in variants["softmax"]:
        assert not by_name[name].passed, f"{name} was accepted"
    assert "NameError" in by_name["defines_another_name"].reason
    problems, _ = report(verdicts)
    assert not problems
