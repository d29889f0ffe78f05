#!/usr/bin/env bash
# Instructors: build the course as a static website in _site/ (creates ./.venv-site on first run).
# Arguments go to `python -m grading site`, e.g. scripts/site.sh --solutions toggle
#   --solutions omit    exercises show the students' stubs (default: publishable while grading)
#   --solutions toggle  reference answers collapsed behind a "Show the reference solution" toggle
#   --out DIR           somewhere other than _site/
#   CHAPTER ...         only these chapters
# The build reads the committed notebooks and runs Sphinx; it executes nothing, so it needs neither torch
# nor nbgrader. It runs in a small environment of its own, .venv-site/, holding what pyproject.toml's `site`
# extra lists plus nbformat and jupytext (the notebook libraries grading.site imports), installed on first
# run and again when pyproject.toml changes; the course package itself is read from this checkout.
# TM_SITE_VENV=DIR uses another folder (TM_SITE_VENV=.venv: the course environment, which works as well).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
VENV="${TM_SITE_VENV:-$REPO/.venv-site}"
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac

if [ ! -x "$VENV/bin/python" ]; then
  py=""
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      py="$candidate"; break
    fi
  done
  if [ -z "$py" ]; then
    echo "error: the site build needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
  fi
  echo "creating $VENV ..."
  "$py" -m venv "$VENV"
  [ -e "$VENV/.gitignore" ] || echo "*" > "$VENV/.gitignore"  # as Python >= 3.13's venv does
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"

site_requirements() {  # read from pyproject.toml (tomllib: Python >= 3.11), one a line
  "$PY" - <<'EOF'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
notebook_libraries = [d for d in project["dependencies"] if re.match(r"(nbformat|jupytext)\b", d, re.I)]
print("\n".join(notebook_libraries + project["optional-dependencies"]["site"]))
EOF
}

STAMP="$VENV/.tm-site-installed"
WANT="$(cksum < pyproject.toml)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  reqs=()
  while IFS= read -r req; do reqs+=("$req"); done < <(site_requirements)
  if [ "${#reqs[@]}" -eq 0 ]; then echo "error: no site requirements found in pyproject.toml" >&2; exit 1; fi
  echo "installing the site's tools: ${reqs[*]} ..."
  "$PY" -m pip install -q "${reqs[@]}"
  echo "$WANT" > "$STAMP"
fi

# grading/ comes from this checkout (python -m runs from the repository root); TM_ROOT says which course
TM_ROOT="$REPO" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m grading site "$@"
