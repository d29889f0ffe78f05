"""Command line: ``python -m grading {build,release,check,autograde,validate,variants,site,demo}``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grading.paths import GradingError, repo_root, resolve_chapters


def _cmd_build(args) -> int:
    from grading.build import build, source_chapters

    root = repo_root()
    names = args.chapters or source_chapters(root)
    unknown = [n for n in names if n not in source_chapters(root)]
    if unknown:
        raise GradingError(f"no chapters/<name>/<name>.py source for: {', '.join(unknown)}")
    build(names, root)
    return 0


def _cmd_release(args) -> int:
    from grading.course import release

    root = repo_root()
    for path in release(resolve_chapters(args.chapters, root), root):
        print(f"released {path.relative_to(root)}")
    return 0


def _cmd_check(args) -> int:
    from grading.check import check

    problems = check()
    for problem in problems:
        print(f"FAIL  {problem}")
    print("check passed: course/ is in sync with solutions/ and holds no solutions or hidden tests"
          if not problems else f"check failed: {len(problems)} problem(s)")
    return 1 if problems else 0


def _cmd_autograde(args) -> int:
    from grading.autograde import autograde, format_table
    from grading.sandbox import Limits

    results = autograde(
        Path(args.submissions), Path(args.out), jobs=args.jobs,
        cell_timeout=args.cell_timeout, notebook_timeout=args.timeout,
        sandbox=args.sandbox or os.environ.get("TM_SANDBOX") or "require",
        limits=Limits(memory_mb=args.memory_mb, cpu_seconds=args.timeout),
    )
    print()
    print(format_table(results))
    print(f"\nwrote {Path(args.out) / 'grades.csv'}")
    return 0


def _cmd_validate(args) -> int:
    from grading.validate import report, validate

    path = Path(args.notebook)
    return 0 if report(path, validate(path, cell_timeout=args.cell_timeout)) else 1


def _cmd_variants(args) -> int:
    from grading.variants import check_variants, report

    root = repo_root()
    failed = 0
    for chapter in resolve_chapters(args.chapters, root):
        problems, lines = report(check_variants(chapter, root))
        print(f"== {chapter}")
        print("\n".join(lines))
        failed += len(problems)
    print(f"\n{failed} problem(s)" if failed else "\nevery reference passes and every wrong answer is rejected")
    return 1 if failed else 0


def _cmd_site(args) -> int:
    from grading.site import build_site

    index = build_site(Path(args.out) if args.out else None, solutions=args.solutions,
                       names=resolve_chapters(args.chapters, repo_root()))
    print(f"\nopen {index} in a browser, or serve the folder and go to http://localhost:8000 :\n"
          f"  python -m http.server -d {index.parent} 8000")
    return 0


def _cmd_demo(args) -> int:
    from grading.demo import demo

    return demo(jobs=args.jobs, keep=Path(args.keep) if args.keep else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m grading", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("build", help="chapters/<ch>/<ch>.py -> executed solutions/<ch>/<ch>.ipynb -> course/")
    s.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    s.set_defaults(func=_cmd_build)

    s = sub.add_parser("release", help="regenerate course/ from solutions/")
    s.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    s.set_defaults(func=_cmd_release)

    s = sub.add_parser("check", help="exit 1 if course/ is out of sync with solutions/ or leaks answers")
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser("autograde", help="grade SUBMISSIONS (<student>/<chapter>/<chapter>.ipynb, folder or zip)")
    s.add_argument("submissions")
    s.add_argument("--out", required=True, help="folder for grades.csv and feedback/")
    s.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded at once (default: cores)")
    s.add_argument("--cell-timeout", type=int, default=60, help="seconds one cell may run (default 60)")
    s.add_argument("--timeout", type=int, default=600, help="seconds one notebook may take in all (default 600)")
    s.add_argument("--sandbox", choices=["require", "auto", "off"], default=None,
                   help="confine each kernel with bubblewrap: require it (default, or $TM_SANDBOX), use it when "
                        "available and otherwise grade unconfined with a warning (auto), or off")
    s.add_argument("--memory-mb", type=int, default=8192, help="address-space limit of a kernel (default 8192)")
    s.set_defaults(func=_cmd_autograde)

    s = sub.add_parser("validate", help="run a notebook like the grader; exit 1 if a test cell fails")
    s.add_argument("notebook")
    s.add_argument("--cell-timeout", type=int, default=120)
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("variants", help="try every wrong answer in chapters/<ch>/wrong_answers.py in one kernel")
    s.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    s.set_defaults(func=_cmd_variants)

    s = sub.add_parser("site", help="static HTML site of the reference chapters (Sphinx + myst-nb)")
    s.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    s.add_argument("--solutions", choices=("omit", "toggle"), default="omit",
                   help="omit: exercises show the students' stubs (default); toggle: reference answers collapsed")
    s.add_argument("--out", help="output folder (default: _site/ at the repository root)")
    s.set_defaults(func=_cmd_site)

    s = sub.add_parser("demo", help="release, autograde and feedback on bundled samples (headless)")
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--keep", help="keep the demo workspace in this folder")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
