#!/usr/bin/env bash
# Set up the environment and run the standard benchmark set: every row in its own process, one after another
# (hours on 2 cores), into benchmarks/results.json and benchmarks/README.md. Extra flags are passed on, e.g.
#   bash scripts/benchmark.sh --rows=train_b32,input_b64 --quick      # a subset, merged into results.json
#   bash scripts/benchmark.sh --out_dir=/tmp/bench                    # elsewhere
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
python -m hdas_tf.benchmark --standard --out_dir=benchmarks "$@"
