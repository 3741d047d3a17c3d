#!/usr/bin/env bash
# Create <repo>/.venv with the pinned stack and this project (once; again when pyproject.toml changes).
# Plain pip on purpose: it takes the local CPU build of torch 2.13.0 where one lies on disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ! -x .venv/bin/gan-pipeline || pyproject.toml -nt .venv/.installed ]]; then
  echo "setting up .venv (first run only; a few minutes; pip's output goes to .venv/setup.log)" >&2
  python3 -m venv .venv
  # pip's and the build backend's notices go to the log; a failed install shows it.
  if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
         .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"; } > .venv/setup.log 2>&1; then
    cat .venv/setup.log >&2
    echo "setting up .venv failed; the whole log: .venv/setup.log" >&2
    exit 1
  fi
  touch .venv/.installed
fi
