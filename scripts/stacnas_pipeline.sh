#!/usr/bin/env bash
# The StacNAS search on the bundled digits (offline): stage 1 over operator clusters (one representative op
# each) writes the winning cluster of every edge; stage 2 searches each edge's cluster members on a deeper
# supernet and writes the final genotype.
# Usage: bash scripts/stacnas_pipeline.sh [OUT_DIR] [extra flags for both stages, e.g. --num_examples=200]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
OUT="${1:-runs/stacnas-$(date +%Y%m%d-%H%M%S)}"
shift || true
python -m hdas_tf.search --flagfile=flags/demo.cfg --stacnas=clusters --run_dir="$OUT/1_clusters" "$@"
python -m hdas_tf.search --flagfile=flags/demo.cfg --stacnas=members --layers=8 \
  --edge_clusters="$OUT/1_clusters/edge_clusters.json" --run_dir="$OUT/2_members" "$@"
echo "per-edge clusters: $OUT/1_clusters/edge_clusters.json; final genotype: $OUT/2_members/genotype.json"
