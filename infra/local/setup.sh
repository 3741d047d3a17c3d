#!/usr/bin/env bash
# Create <repo>/.venv with the pinned stack and this project (once; again when pyproject.toml changes).
# Plain pip on purpose: it takes the local CPU build of torch 2.13.0 where one lies on disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ! -x .venv/bin/gan-pipeline || pyproject.toml -nt .venv/.installed ]]; then
  echo "setting up .venv (first run only; a few minutes)" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  touch .venv/.installed
fi
