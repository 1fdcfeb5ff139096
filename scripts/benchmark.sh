#!/usr/bin/env bash
# Set up the environment and run the standard benchmark set: every row in its own process, one after another
# (hours on 2 cores), into benchmarks/results.json and benchmarks/README.md (python -m benchmarks.standard).
# Extra flags are passed on, e.g.
#   bash scripts/benchmark.sh --rows=train_b32,input_b64 --quick      # a subset, merged into results.json
#   bash scripts/benchmark.sh --out_dir=/tmp/bench                    # elsewhere
#   bash scripts/benchmark.sh --with_pytorch                          # and each row in PyTorch on this host
# --with_pytorch makes .venv-torch (torch 2.13.0, scripts/torch_env.sh) and times every row that has a PyTorch
# counterpart in plain PyTorch too, right before the row (twice the time).
set -euo pipefail
args=()
with_pytorch=0
for arg in "$@"; do
  if [ "$arg" = "--with_pytorch" ]; then with_pytorch=1; else args+=("$arg"); fi
done
if [ "$with_pytorch" = 1 ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/torch_env.sh"
  args+=("--pytorch_python=$TORCH_PYTHON")
fi
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
python -m benchmarks.standard --out_dir=benchmarks "${args[@]}"
