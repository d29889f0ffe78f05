"""``python -m grading demo``: the whole pipeline on bundled sample submissions, in a throwaway folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from grading.autograde import autograde, format_table
from grading.course import release
from grading.paths import repo_root
from grading.samples import make_samples, write_batch

DEMO_CHAPTER = "00_orientation"


def demo(*, jobs: int = 2, keep: Path | None = None, log=print) -> int:
    root = repo_root()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tm-demo-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        log(f"[1/3] release: regenerating {DEMO_CHAPTER} from solutions/ into {work / 'course'}")
        release([DEMO_CHAPTER], root, dest=work / "course")
        batch = write_batch(work / "submitted", DEMO_CHAPTER, make_samples(DEMO_CHAPTER, root))
        log(f"[2/3] autograde + feedback: {', '.join(sorted(p.name for p in batch.iterdir()))}")
        results = autograde(batch, work / "graded", jobs=jobs, cell_timeout=20, notebook_timeout=180, root=root, log=log)
        feedback = sorted((work / "graded" / "feedback").rglob("*.html"))
        log(f"[3/3] wrote {work / 'graded' / 'grades.csv'} and {len(feedback)} feedback file(s)\n")
        log(format_table(results))
    log(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    return 0
