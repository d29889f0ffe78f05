#!/usr/bin/env bash
# Students: open the course in JupyterLab (creates ./.venv on first run).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" test

# nbgrader's instructor tools are installed with it; a student's lab should not show them
# (shared/PITFALLS.md item 12). Validate stays.
for plugin in formgrader create-assignment course-list; do
  jupyter labextension disable --level=sys_prefix "@jupyter/nbgrader:$plugin" >/dev/null 2>&1 || true
  # locked: the Plugin Manager in Settings cannot switch it back on
  jupyter labextension lock --level=sys_prefix "@jupyter/nbgrader:$plugin" >/dev/null 2>&1 || true
done
jupyter server extension disable --sys-prefix nbgrader.server_extensions.formgrader >/dev/null 2>&1 || true
jupyter server extension disable --sys-prefix nbgrader.server_extensions.course_list >/dev/null 2>&1 || true

exec jupyter lab --notebook-dir="$REPO/course" "$@"
