#!/usr/bin/env bash
# Set up the environment and run the test suite (fast tests; add --run-slow for the slow ones).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
python -m pytest -q tests "$@"
