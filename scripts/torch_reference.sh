#!/usr/bin/env bash
# Host calibration for the speed goals (BUILD_NOTES "Benchmark method"): times plain-PyTorch versions
# of the reference configurations (benchmarks/torch_reference/darts_torch.py) on this host, so that hdas_tf's
# benchmark rows can be compared with PyTorch on the same machine. Creates .venv-torch with torch==2.13.0 (the
# CPU build the issue's reference figures used; no download where its wheel is on disk), then prints one JSON
# line per configuration.
# Usage: bash scripts/torch_reference.sh [extra flags, e.g. --steps=5]
# (bash scripts/benchmark.sh --with_pytorch times the same configurations next to hdas_tf's standard rows.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/torch_env.sh"
source "$TORCH_ROOT/scripts/setup_env.sh"  # for the genotype file: hdas_tf writes DARTS_V2 as JSON
GENOTYPE="$(mktemp --suffix=.json)"
trap 'rm -f "$GENOTYPE"' EXIT
python -c "from hdas_tf.space.registry import REGISTRY; open('$GENOTYPE', 'w').write(REGISTRY['DARTS_V2'].to_json())"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=train --genotype="$GENOTYPE" "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=cell_search --batch=16 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=cell_search --batch=64 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=cell_search --order=2 --batch=16 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=cell_search --cells=stage_specific --batch=64 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=stage_search --genotype="$GENOTYPE" --batch=16 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=stage_search --genotype="$GENOTYPE" --batch=64 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=stage_search --genotype="$GENOTYPE" --order=2 --batch=16 "$@"
"$TORCH_PYTHON" "$ROOT/benchmarks/torch_reference/darts_torch.py" --config=distribution_search --genotype="$GENOTYPE" --max_cells=6 --batch=64 "$@"
