#!/usr/bin/env bash
# The H-DAS pipeline: cell search → cell-distribution (β) search on the searched cell → stage-DAG search with the
# chosen stage lengths (each phase reads the previous genotype file) → with --paper, 600-epoch training.
#
# Usage:
#   bash scripts/hdas_pipeline.sh [OUT_DIR] [extra flags for every phase, e.g. --num_examples=200]
#       the digits demo (offline, minutes on a CPU): the three search phases at demo size
#   bash scripts/hdas_pipeline.sh --paper RUN_DIR [--cell_search=hc_das|darts] [--cells=GENOTYPE] [--dry_run] \
#       [extra flags for every phase, e.g. --data_dir=~/tensorflow_datasets]
#       the paper's CIFAR-10 settings (README "Reproducing the papers"): RUN_DIR/1_cells (flags/cifar10_hc_das.cfg,
#       or flags/cifar10_darts.cfg with --cell_search=darts; skipped with --cells=GENOTYPE, e.g. DARTS_V2, which
#       the later phases then use), 2_distribution, 3_stages, 4_train (flags/cifar10_train.cfg).
#       Resumable: a phase whose run.json exists is finished and skipped; one with a checkpoint but no run.json
#       was interrupted and continues with --resume; the others start fresh. --dry_run prints the commands
#       (and the skipped phases) without running anything.
set -euo pipefail

if [ "${1:-}" != "--paper" ]; then
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
  exit 0
fi

shift
usage="usage: bash scripts/hdas_pipeline.sh --paper RUN_DIR [--cell_search=hc_das|darts] [--cells=GENOTYPE] [--dry_run] [flags]"
RUN="${1:-}"
if [ -z "$RUN" ] || [ "${RUN#--}" != "$RUN" ]; then
  echo "--paper needs a run directory first; $usage" >&2
  exit 2
fi
shift
DRY=0
CELL_FLAGS=flags/cifar10_hc_das.cfg
CELLS=""
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY=1 ;;
    --cell_search=hc_das) CELL_FLAGS=flags/cifar10_hc_das.cfg ;;
    --cell_search=darts) CELL_FLAGS=flags/cifar10_darts.cfg ;;
    --cell_search=*) echo "unknown ${arg}; choose --cell_search=hc_das or darts" >&2; exit 2 ;;
    --cells=*) CELLS="${arg#--cells=}" ;;
    *) EXTRA+=("$arg") ;;
  esac
done
if [ "$DRY" = 0 ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
  cd "$ROOT"
else
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
fi

# phase DIR COMMAND...: skip a finished phase, resume an interrupted one, else start it.
phase() {
  local dir="$1"
  shift
  if [ -f "$dir/run.json" ]; then
    echo "skip (finished, $dir/run.json exists): $*"
    return
  fi
  local cmd=("$@" "--run_dir=$dir")
  if compgen -G "$dir/checkpoints/*.index" >/dev/null; then
    cmd+=(--resume)
  fi
  cmd+=(${EXTRA[@]+"${EXTRA[@]}"})
  if [ "$DRY" = 1 ]; then
    echo "run: ${cmd[*]}"
  else
    "${cmd[@]}"
  fi
}

if [ -n "$CELLS" ]; then
  echo "skip (cells given): the cell search; the later phases use --cells=$CELLS"
else
  phase "$RUN/1_cells" python -m hdas_tf.search --flagfile="$CELL_FLAGS"
  CELLS="$RUN/1_cells/genotype.json"
fi
phase "$RUN/2_distribution" python -m hdas_tf.search --flagfile=flags/cifar10_hs_das_distribution.cfg \
  --genotype="$CELLS"
# No --stage_lengths: phase 3 takes the lengths phase 2 chose from its genotype file.
phase "$RUN/3_stages" python -m hdas_tf.search --flagfile=flags/cifar10_hs_das_stage.cfg \
  --genotype="$RUN/2_distribution/genotype.json" --stage_lengths=
phase "$RUN/4_train" python -m hdas_tf.train --flagfile=flags/cifar10_train.cfg \
  --genotype="$RUN/3_stages/genotype.json"
echo "final genotype: $RUN/3_stages/genotype.json; accuracy: $RUN/4_train/metrics.json"
