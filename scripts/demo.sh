#!/usr/bin/env bash
# Set up the environment and run the demo search on the bundled handwritten digits (offline).
# Writes runs/demo (or the directory given as the first argument); pass extra flags after it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
RUN_DIR="${1:-runs/demo-$(date +%Y%m%d-%H%M%S)}"
shift || true
python -m hdas_tf.search --flagfile=flags/demo.cfg --run_dir="$RUN_DIR" "$@"
python -m hdas_tf.inspect --supernet=cell --cells=shared --init_channels=8 --layers=5
echo "genotype: $RUN_DIR/genotype.json   TensorBoard: tensorboard --logdir $RUN_DIR/tb"
