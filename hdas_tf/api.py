"""The public API (``import hdas_tf``): load a genotype, build its evaluation network, build a search model, run a
search or a training from a config, derive a genotype from a search's α. Each is a thin wrapper over the library
(``space.registry``, ``nn.eval_networks``, ``search.job``, ``train.job``, ``space.derive``); every other module
stays importable but is not promised (README "Python API"). A user's mistake raises ``hdas_tf.UserError``.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from hdas_tf.errors import GenotypeError, UserError
from hdas_tf.search.config import SearchConfig
from hdas_tf.space.genotypes import SHARED_KEYS, STAGE_SPECIFIC_KEYS, Genotype
from hdas_tf.train.config import TrainConfig


def load_genotype(name_or_path) -> Genotype:
    """A genotype from a registry name (``"DARTS_V2"``, ``"PDARTS"``, ``"HC_DAS"``, ...; any case) or a genotype
    file (our JSON document, e.g. a search's ``genotype.json``, or a PyTorch genotype string). GenotypeError if
    it is neither."""
    from hdas_tf.space import registry

    return registry.resolve(name_or_path)


def build_network(genotype, num_classes: int = 10, *, init_channels: int = 36, layers: int = 20,
                  layout: str = "cifar", stage_genotype=None, auxiliary: bool = True, pool_bn: bool = True,
                  drop_path: bool = False, image_size: int | None = None):
    """The evaluation network of ``genotype`` (a Genotype, a registry name or a file) as a Keras model: a
    ``ChainNetwork`` of ``layers`` cells, or a ``StageNetwork`` (its cells from the stage DAGs; ``layers`` unused)
    when the genotype or ``stage_genotype`` carries stage DAGs. ``image_size``: build it for inputs
    ``(image_size, image_size, 3)`` now (otherwise on the first call). ``drop_path`` builds the drop path (its rate
    is ``network.drop_path_rate``, 0 until set). The model saves and loads with ``keras.models.load_model`` after
    ``import hdas_tf``."""
    from hdas_tf.nn.eval_networks import build_eval_network
    from hdas_tf.train.model import combine_genotypes

    genotype = os.fspath(genotype) if isinstance(genotype, os.PathLike) else genotype
    stage_genotype = os.fspath(stage_genotype) if isinstance(stage_genotype, os.PathLike) else stage_genotype
    combined = combine_genotypes(genotype, stage_genotype)
    chain = combined.stages is None and combined.stage_lengths is None
    network = build_eval_network(combined, num_classes, init_channels, layers if chain else None, layout,
                                 auxiliary=auxiliary, pool_bn=pool_bn, drop_path=drop_path)
    if image_size is not None:
        network.build((None, image_size, image_size, 3))
    return network


def build_search_model(config: SearchConfig, num_classes: int | None = None, image_size: int | None = None,
                       steps_per_epoch: int = 1):
    """The search model a ``search(config, ...)`` trains, built (supernet, α/β and both optimizers): an
    ``ArchitectureSearchModel`` whose ``train_step`` is the bi-level step, ``supernet`` the weights and
    ``arch_dict()`` the architecture variables. ``num_classes`` and ``image_size`` default to the config's data
    set (opened to read them); ``steps_per_epoch`` sets the cosine schedule of the weight learning rate."""
    from hdas_tf import data
    from hdas_tf.run.strategy import make_strategy
    from hdas_tf.search.job import build_search, check_inputs

    check_inputs(config)
    if num_classes is None or image_size is None:
        info = data.dataset_info(config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                                 manual_dir=config.manual_dir, download=config.download)
        num_classes = num_classes or info.num_classes
        image_size = image_size or info.image_shape[0]
    # build_search reads only the class count and the image shape of the data.
    shapes = data.DataInfo(name="given shapes", num_classes=num_classes, image_shape=(image_size, image_size, 3),
                           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), class_names=None, num_train=0, num_test=0)
    _, model, _ = build_search(config, make_strategy(config.strategy), shapes, steps_per_epoch)
    return model


def search(config: SearchConfig, run_dir, resume: bool = False) -> dict:
    """Runs (or with ``resume`` continues) the search ``config`` describes in ``run_dir``, as ``python -m
    hdas_tf.search`` does; returns the run summary (``RUN_DIR/run.json``). The genotype is
    ``RUN_DIR/genotype.json`` (``load_genotype`` reads it). A refused run (UserError) writes nothing."""
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.search.job import run_search

    configure_runtime(config)  # the config's seed, determinism and thread settings, as the main applies them
    return run_search(config, os.fspath(run_dir), resume=resume)


def train(config: TrainConfig, run_dir, resume: bool = False) -> dict:
    """Trains (or with ``resume`` continues training) ``config.genotype`` from scratch in ``run_dir``, as ``python
    -m hdas_tf.train`` does; returns the run summary (``RUN_DIR/run.json``). The trained network is
    ``RUN_DIR/model.keras``. A refused run (UserError) writes nothing."""
    from hdas_tf.run.runtime import configure_runtime
    from hdas_tf.train.job import TrainJob

    configure_runtime(config)
    return TrainJob(config, os.fspath(run_dir), resume=resume).run()


def derive_genotype(alphas, *, op_names=None, ranking: str = "softmax", steps: int = 4,
                    name: str | None = None) -> Genotype:
    """The genotype of a cell search's α (BUILD_NOTES "Deriving genotypes": per node the top-2 incoming edges, each
    with its strongest op other than 'none'), from ``RUN/alphas.npz`` or a dict of arrays: ``alpha_normal`` and
    ``alpha_reduce`` (DARTS), or ``alpha_normal1..3`` and ``alpha_reduce1..2`` (H^c-DAS), each [edges, ops].

    Args:
      op_names: the ops of α's last axis, in order; defaults to the full op set (a plain cell search). A StacNAS
        search searched other sets: its genotype.json holds the genotype derived with them.
      ranking: "softmax" (rank edges by softmax probability) or "logit" (raw α), as ``--edge_ranking``.
      steps: intermediate nodes per cell.
    """
    from hdas_tf.space.derive import parse_cell_alphas
    from hdas_tf.space.op_registry import CELL_OPS

    where = "alphas"
    if isinstance(alphas, (str, os.PathLike)):
        where = os.fspath(alphas)
        try:
            loaded = np.load(where, allow_pickle=False)  # never a pickle from a user's file
        except FileNotFoundError:
            raise UserError(f"alphas file {where!r} does not exist") from None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"cannot read alphas file {where!r} as an .npz archive: {e}") from None
        if not hasattr(loaded, "files"):  # a single .npy array
            raise UserError(f"alphas file {where!r} is one array, not an .npz archive of named α arrays")
        try:
            with loaded:
                alphas = {key: loaded[key] for key in loaded.files}
        except ValueError as e:  # e.g. an object array, which only a pickle could restore
            raise UserError(f"cannot read alphas file {where!r}: {e}") from None
    groups = {key[len("alpha_"):]: value for key, value in dict(alphas).items() if key.startswith("alpha_")}
    if set(groups) not in (set(SHARED_KEYS), set(STAGE_SPECIFIC_KEYS)):
        raise GenotypeError(f"{where} has arrays {sorted(dict(alphas))}; derive_genotype reads a cell search's α "
                            "(alpha_normal and alpha_reduce, or alpha_normal1..3 and alpha_reduce1..2). A stage or "
                            "distribution search's genotype.json holds the genotype it derived.")
    order = SHARED_KEYS if set(groups) == set(SHARED_KEYS) else STAGE_SPECIFIC_KEYS
    cells = {}
    for group in order:
        try:
            cells[group] = parse_cell_alphas(groups[group], op_names=op_names or CELL_OPS, steps=steps,
                                             ranking=ranking)
        except ValueError as e:  # the shape or values of the user's array
            raise GenotypeError(f"{where}: alpha_{group}: {e}") from None
    genotype = Genotype(cells=cells, name=name)
    genotype.validate()
    return genotype
