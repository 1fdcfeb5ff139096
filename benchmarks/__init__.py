"""The standard benchmark set of hdas_tf and its committed results; run from the repository root with
``python -m benchmarks.standard`` (``bash scripts/benchmark.sh``)."""
