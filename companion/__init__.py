"""Companion package of the Transformer Mechanics course.

Each chapter imports the tested implementations it needs from here:
``companion.runtime`` (seeding, device choice, the grading scale switch),
``companion.testing`` (the checks that exercise cells call), and one module per
mechanism. The package is versioned with the course: a chapter states the
version it was written for with :func:`require_version`, so a notebook and the
package it imports never silently disagree.
"""

from companion.runtime import (
    SCALE_ENV,
    get_device,
    is_reduced,
    require_version,
    scaled,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "SCALE_ENV",
    "get_device",
    "is_reduced",
    "require_version",
    "scaled",
    "seed_everything",
]
