"""`python -m hdas_tf.cli.build_kernels`: build hdas_tf's CPU kernels ahead of the first run (scripts/setup_env.sh).

Prints the library's path; without a C++ compiler it says why and exits 1 (TensorFlow's kernels are then used).
"""

import sys


def run() -> int:
    from hdas_tf.nn.cpu_kernels import KernelBuildError, build

    try:
        print(build())
    except KernelBuildError as e:
        print(f"hdas_tf: its CPU kernels were not built; TensorFlow's are used instead.\n{e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
