#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in $VENV (default .venv) and installs the pinned
# requirements. Needs only Python 3.11 and pip. Sourced by the other scripts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements-test.txt"
# hdas_tf itself, editable (pyproject.toml): `python -m hdas_tf.<entry>` then runs from any directory.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# hdas_tf's CPU kernels (hdas_tf/nn/csrc), compiled once per machine into a cache (about 30 s), so that no run pays
# for it before its first step. Without a C++ compiler this prints why and TF's kernels are used instead.
"$VENV/bin/python" -m hdas_tf.cli.build_kernels >/dev/null || true
