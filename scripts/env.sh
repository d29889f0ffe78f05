# Sourced by scripts/lab.sh and scripts/test.sh: make sure ./.venv exists and holds the course.
# Creates it on first use (Python >= 3.11 needed), reinstalls when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
VENV="${TM_VENV:-$REPO/.venv}"
EXTRAS="${1:-test}"

pick_python() {
  for py in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  echo "error: the course needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV ..."
  "$(pick_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"

# torch first, pinned to the release the course is tested with (override with TORCH_SPEC).
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  echo "installing ${TORCH_SPEC:-torch==2.13.0} ..."
  "$PY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi

STAMP="$VENV/.tm-installed-$EXTRAS"
WANT="$(cat pyproject.toml | cksum)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || ! "$PY" -c 'import companion, grading' >/dev/null 2>&1; then
  echo "installing the course package (pip install -e .[$EXTRAS]) ..."
  "$PY" -m pip install -q -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
