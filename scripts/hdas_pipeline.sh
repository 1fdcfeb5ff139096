#!/usr/bin/env bash
# The H-DAS search pipeline on the bundled digits (offline): cell search → cell-distribution (β) search on the
# searched cell → stage-DAG search with the chosen stage lengths. Each phase reads the previous genotype file.
# Usage: bash scripts/hdas_pipeline.sh [OUT_DIR] [extra flags for every phase, e.g. --num_examples=200]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
OUT="${1:-runs/pipeline-$(date +%Y%m%d-%H%M%S)}"
shift || true
python -m hdas_tf.search --flagfile=flags/demo.cfg --run_dir="$OUT/1_cells" "$@"
python -m hdas_tf.search --flagfile=flags/demo_hs_das_distribution.cfg --genotype="$OUT/1_cells/genotype.json" \
  --run_dir="$OUT/2_distribution" "$@"
# No --stage_lengths: phase 3 takes the lengths phase 2 chose from its genotype file.
python -m hdas_tf.search --flagfile=flags/demo_hs_das_stage.cfg --genotype="$OUT/2_distribution/genotype.json" \
  --stage_lengths= --run_dir="$OUT/3_stages" "$@"
echo "final genotype (cells + stage DAGs): $OUT/3_stages/genotype.json"
