"""Shared fixtures: the repository, its chapters, and graded batches built from each chapter's own notebooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TM_ROOT", str(ROOT))

from grading.paths import chapters  # noqa: E402

CHAPTERS = chapters(ROOT)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def pytest_generate_tests(metafunc):
    if "chapter" in metafunc.fixturenames:
        metafunc.parametrize("chapter", CHAPTERS, scope="module")
