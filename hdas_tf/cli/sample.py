"""`python -m hdas_tf.sample`: random architectures drawn uniformly from a search's space, one genotype file
each, for the random baselines of the H-DAS ablation (``hdas_tf.space.sample``).

  --kind=cell   cells as a cell search derives them (--cells=shared: DARTS; stage_specific: H^c-DAS)
  --kind=stage  stage DAGs as an H^s-DAS stage search derives them (--stage, --window, --stage_lengths), put on
                the fixed cells of --genotype, as the stage search does

Each file (OUT_DIR/random_<kind>_s<SEED>_<i>.json) is what ``hdas_tf.train --genotype=FILE`` takes. Nothing is
written when a target file exists already or a flag is wrong.
"""

from __future__ import annotations

import os

from absl import app, flags

from hdas_tf.cli.errors import run_main

FLAGS = flags.FLAGS

flags.DEFINE_enum("kind", "cell", ["cell", "stage"], "cell: random cells (a cell search's space); stage: random "
                  "stage DAGs on the cells of --genotype (an H^s-DAS stage search's space).")
flags.DEFINE_enum("cells", "shared", ["shared", "stage_specific"], "--kind=cell: shared (DARTS: normal + reduce) or "
                  "stage_specific (H^c-DAS: normal1/2/3 + reduce1/2) cells.")
flags.DEFINE_enum("stage", "stage_specific", ["shared", "stage_specific"], "--kind=stage: one DAG for all stages "
                  "(H^s-DAS*) or one per stage (H^s-DAS).")
flags.DEFINE_string("genotype", None, "--kind=stage: the fixed cells (a registry name such as DARTS_V2, or a genotype "
                    "file); its stage_lengths are used when --stage_lengths is not given.")
flags.DEFINE_integer("window", 3, "--kind=stage: sliding window m of stage-cell sources.", lower_bound=1)
flags.DEFINE_list("stage_lengths", None, "--kind=stage: cells per stage, e.g. 6,6,6 (default: the genotype's, else "
                  "6,6,6).")
flags.DEFINE_integer("num", None, "How many architectures to draw.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed; sample i depends on (seed, i) only.", lower_bound=0)
flags.DEFINE_string("out_dir", None, "Folder for the genotype files (created if missing).")


def _space_and_cells():
    from hdas_tf.space import registry
    from hdas_tf.space.search_space import SearchSpace

    if FLAGS.kind == "cell":
        stage_flags = [f"--{n}" for n in ("genotype", "stage_lengths", "window", "stage") if FLAGS[n].present]
        if stage_flags:
            raise ValueError(f"--kind=cell takes no {', '.join(stage_flags)} (flags of a stage sample); drop them "
                             "or use --kind=stage")
        return SearchSpace(cells=FLAGS.cells), None
    if FLAGS["cells"].present:
        raise ValueError("--cells describes a cell sample; a stage sample takes its cells from --genotype")
    if not FLAGS.genotype:
        raise ValueError("--kind=stage needs --genotype, the fixed cells (e.g. DARTS_V2 or a cell search's "
                         "genotype.json)")
    cells = registry.resolve(FLAGS.genotype)
    if cells.cells is None:
        raise ValueError(f"genotype {FLAGS.genotype!r} has no cells; pass a cell genotype (e.g. DARTS_V2)")
    if FLAGS.stage_lengths:
        try:
            lengths = tuple(int(n) for n in FLAGS.stage_lengths)
        except ValueError:
            raise ValueError(f"--stage_lengths must be three integers, e.g. 6,6,6; received "
                             f"{','.join(FLAGS.stage_lengths)}") from None
    else:
        lengths = tuple(cells.stage_lengths) if cells.stage_lengths else (6, 6, 6)
    return SearchSpace(stage=FLAGS.stage, window=FLAGS.window, stage_lengths=lengths), cells


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hdas_tf.space.sample import sample_genotypes

    try:
        space, cells = _space_and_cells()
        genotypes = sample_genotypes(space, FLAGS.kind, FLAGS.num, FLAGS.seed, cells)
        paths = [os.path.join(FLAGS.out_dir, f"{g.name}.json") for g in genotypes]
        existing = [p for p in paths if os.path.exists(p)]
        if existing:
            raise ValueError(f"{existing[0]} exists already ({len(existing)} of the {len(paths)} files); choose "
                             "another --out_dir or --seed, or remove them")
    except ValueError as e:
        raise app.UsageError(str(e))
    for genotype, path in zip(genotypes, paths):
        genotype.save(path)  # atomic (hdas_tf.files)
        print(path)


def run():
    """The entry point of ``python -m hdas_tf.sample``."""
    flags.mark_flags_as_required(["num", "out_dir"])
    run_main("sample", main)
