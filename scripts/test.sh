#!/usr/bin/env bash
# Maintainers and CI: run the whole test suite (creates ./.venv on first run).
# Extra arguments go to pytest, e.g. scripts/test.sh -k graders
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" test
python -m grading check
exec python -m pytest -n "${TM_TEST_WORKERS:-2}" --dist loadfile "$@"
