"""Runtime helpers shared by every chapter: seeding, device choice, the scale switch.

The scale switch
----------------
Chapters reproduce papers' experiments at a size that fits a 2-core CPU. When a
notebook is *graded* it must run faster still, so heavy experiments shrink
under one documented switch, the environment variable ``TM_SCALE``:

* ``TM_SCALE=full`` (default): the sizes the chapter text talks about.
* ``TM_SCALE=reduced``: smaller experiments; exercises and their tests are unaffected.

``python -m grading autograde`` and ``python -m grading validate`` set
``TM_SCALE=reduced``; a chapter reads the switch with :func:`scaled`, e.g.
``steps = scaled(full=2000, reduced=200)``.
"""

from __future__ import annotations

import os
import random
from typing import TypeVar

import torch

SCALE_ENV = "TM_SCALE"
DEVICE_ENV = "TM_DEVICE"
_SCALES = ("full", "reduced")

T = TypeVar("T")


def scale() -> str:
    """The current scale, ``"full"`` or ``"reduced"`` (from ``$TM_SCALE``)."""
    value = os.environ.get(SCALE_ENV, "full").strip().lower() or "full"
    if value not in _SCALES:
        raise ValueError(f"{SCALE_ENV} must be one of {_SCALES}, got {value!r}")
    return value


def is_reduced() -> bool:
    """True when heavy experiments should run at reduced size (grading)."""
    return scale() == "reduced"


def scaled(full: T, reduced: T) -> T:
    """Pick an experiment size: ``full`` normally, ``reduced`` under grading."""
    return reduced if is_reduced() else full


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's (if installed) and torch's global generators.

    Returns a fresh CPU ``torch.Generator`` seeded with ``seed``, for code that
    takes an explicit generator (preferred: it touches no global state).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with the course
        pass
    else:
        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device a chapter should use: ``cuda`` when available, else ``cpu``.

    ``prefer`` (or ``$TM_DEVICE``) forces one; asking for ``cuda`` on a machine
    without it raises a clear error instead of failing later inside a kernel.
    """
    choice = prefer or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False on this machine")
    return device


def require_version(wanted: str) -> None:
    """Fail clearly if the installed companion is not the version a chapter was written for.

    ``wanted`` is ``"MAJOR.MINOR"``; the installed package must match both.
    """
    from companion import __version__

    have = __version__.split(".")[:2]
    need = wanted.split(".")[:2]
    if have != need:
        raise RuntimeError(
            f"this chapter was written for companion {wanted}, but companion {__version__} is installed; "
            "update your clone (git pull) and reinstall it (pip install -e .)"
        )
