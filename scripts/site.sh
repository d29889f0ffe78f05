#!/usr/bin/env bash
# Instructors: build the course as a static website in _site/ (creates ./.venv on first run).
# Arguments go to `python -m grading site`, e.g. scripts/site.sh --solutions toggle
#   --solutions omit    exercises show the students' stubs (default: publishable while grading)
#   --solutions toggle  reference answers collapsed behind a "Show the reference solution" toggle
#   --out DIR           somewhere other than _site/
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" site
exec python -m grading site "$@"
