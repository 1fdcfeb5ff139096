#!/usr/bin/env bash
# StacNAS on the bundled digits (offline), the whole method in miniature: a plain cell search (every op on every
# edge) → operator correlations and proposed clusters (python -m hdas_tf.clusters) → stage 1 over one
# representative per proposed cluster → stage 2 over each edge's cluster members on a deeper supernet (both
# one-level, flags/demo_stacnas_*.cfg) → training the final genotype (flags/demo_train.cfg).
# Usage: bash scripts/stacnas_pipeline.sh [OUT_DIR] [extra flags for the three searches, e.g. --num_examples=200]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
OUT="${1:-runs/stacnas-$(date +%Y%m%d-%H%M%S)}"
shift || true
python -m hdas_tf.search --flagfile=flags/demo.cfg --run_dir="$OUT/0_cells" "$@"
python -m hdas_tf.clusters --run_dir="$OUT/0_cells" --num_images=256 --batch_size=64 --num_clusters=4
python -m hdas_tf.search --flagfile=flags/demo_stacnas_clusters.cfg --clusters="$OUT/0_cells/clusters.json" \
  --run_dir="$OUT/1_clusters" "$@"
python -m hdas_tf.search --flagfile=flags/demo_stacnas_members.cfg \
  --edge_clusters="$OUT/1_clusters/edge_clusters.json" --run_dir="$OUT/2_members" "$@"
python -m hdas_tf.train --flagfile=flags/demo_train.cfg --genotype="$OUT/2_members/genotype.json" \
  --run_dir="$OUT/3_train"
echo "clusters: $OUT/0_cells/clusters.json (heatmap $OUT/0_cells/op_correlation.png); per-edge clusters:" \
  "$OUT/1_clusters/edge_clusters.json; final genotype: $OUT/2_members/genotype.json; trained: $OUT/3_train"
