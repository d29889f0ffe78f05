#!/usr/bin/env bash
# Maintainers and CI: run the whole test suite (creates ./.venv on first run).
# Extra arguments go to pytest, e.g. scripts/test.sh -k graders
# Triton's interpreter runs the GPU kernels' tests on the CPU; its wheels exist for Linux x86_64.
# The site extra builds the course website its tests render in Chromium.
extras=test,site
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then extras=test,site,gpu; fi
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" "$extras"
python -m grading check
exec python -m pytest -n "${TM_TEST_WORKERS:-2}" --dist loadfile "$@"
