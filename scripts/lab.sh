#!/usr/bin/env bash
# Students: open the course in JupyterLab (creates ./.venv on first run).
#   ./scripts/lab.sh                JupyterLab on course/, in your browser
#   ./scripts/lab.sh ARGS...        ARGS go to `jupyter lab` (e.g. --port=8889 --no-browser);
#                                   --notebook-dir=DIR (or --ServerApp.root_dir=DIR) replaces course/
# TM_LAB_ENV=current skips creating or updating ./.venv and uses the `jupyter` already on PATH: the
# end-to-end tests (tests/e2e) start the student's lab through this script that way, in the environment
# that runs them.
if [ "${TM_LAB_ENV:-}" = current ]; then
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  REPO="$(pwd)"
else
  source "$(dirname "${BASH_SOURCE[0]}")/env.sh" test
fi

# nbgrader's instructor tools are installed with it; a student's lab should not show them
# (shared/PITFALLS.md item 12). Validate stays. The settings go into this environment's own Jupyter
# configuration (sys-prefix level), so they hold however JupyterLab is started from it.
configure_failed=0
configure() {  # run one configuration command; quiet when it works, its output when it does not
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  # `jupyter server extension disable` exits 0 even when it could not find the extension
  if [ "$rc" -ne 0 ] || grep -q "Validation failed" <<<"$out"; then
    echo "lab.sh: error: '$*' failed (exit $rc); nbgrader's instructor tools may show in JupyterLab:" >&2
    sed 's/^/  | /' <<<"$out" >&2
    configure_failed=1
  fi
}
instructor_plugins=(@jupyter/nbgrader:formgrader @jupyter/nbgrader:create-assignment @jupyter/nbgrader:course-list)
configure jupyter labextension disable --level=sys_prefix "${instructor_plugins[@]}"
# locked: the Plugin Manager in Settings cannot switch them back on
configure jupyter labextension lock --level=sys_prefix "${instructor_plugins[@]}"
configure jupyter server extension disable --sys-prefix \
  nbgrader.server_extensions.formgrader nbgrader.server_extensions.course_list
if [ "$configure_failed" -ne 0 ]; then
  echo "lab.sh: starting JupyterLab anyway; the course itself works (report the error above to your instructor)" >&2
fi

# course/ unless the arguments name another folder (jupyter lab refuses a second one)
notebook_dir=(--notebook-dir="$REPO/course")
for arg in "$@"; do
  case "$arg" in
    --notebook-dir | --notebook-dir=* | --ServerApp.root_dir | --ServerApp.root_dir=*) notebook_dir=() ;;
  esac
done
exec jupyter lab ${notebook_dir[@]+"${notebook_dir[@]}"} "$@"
