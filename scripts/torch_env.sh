#!/usr/bin/env bash
# Sourced: creates (or reuses) $TORCH_VENV (default .venv-torch) with torch==2.13.0, the CPU build the issue's
# reference figures used (pip takes it from the machine's disk where its wheel lies there), and sets
# TORCH_PYTHON to its interpreter. Used by scripts/torch_reference.sh and scripts/benchmark.sh --with_pytorch.
TORCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VENV="${TORCH_VENV:-$TORCH_ROOT/.venv-torch}"
if [ ! -x "$TORCH_VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$TORCH_VENV"
fi
"$TORCH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0 numpy
TORCH_PYTHON="$TORCH_VENV/bin/python"
