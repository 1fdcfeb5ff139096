"""Published genotypes by name (DARTS, P-DARTS, PC-DARTS, NoisyDARTS, StacNAS, H-DAS), and ``resolve``: a
genotype from a registry name or a genotype file."""

from __future__ import annotations

import os

from hdas_tf.errors import GenotypeError
from hdas_tf.space.genotypes import CellGenotype, Genotype, StageGenotype

_MAX, _AVG, _SKIP = "max_pool_3x3", "avg_pool_3x3", "skip_connect"
_SEP3, _SEP5, _DIL3, _DIL5 = "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"


def _shared(name: str, normal, reduce) -> Genotype:
    return Genotype(cells={"normal": CellGenotype(normal), "reduce": CellGenotype(reduce)}, name=name)


def _stages(name: str, concat, *dags) -> Genotype:
    return Genotype(cells=None, stages=tuple(StageGenotype(dag, concat) for dag in dags), name=name)


REGISTRY: dict[str, Genotype] = {
    # Liu et al. 2018, first order.
    "DARTS_V1": _shared(
        "DARTS_V1",
        normal=[[(_SEP3, 1), (_SEP3, 0)], [(_SKIP, 0), (_SEP3, 1)], [(_SKIP, 0), (_SEP3, 1)], [(_SEP3, 0), (_SKIP, 2)]],
        reduce=[[(_MAX, 0), (_MAX, 1)], [(_SKIP, 2), (_MAX, 0)], [(_MAX, 0), (_SKIP, 2)], [(_SKIP, 2), (_AVG, 0)]],
    ),
    # Second order; the "DARTS" row of most tables.
    "DARTS_V2": _shared(
        "DARTS_V2",
        normal=[[(_SEP3, 0), (_SEP3, 1)], [(_SEP3, 0), (_SEP3, 1)], [(_SEP3, 1), (_SKIP, 0)], [(_SKIP, 0), (_DIL3, 2)]],
        reduce=[[(_MAX, 0), (_MAX, 1)], [(_SKIP, 2), (_MAX, 1)], [(_MAX, 0), (_SKIP, 2)], [(_SKIP, 2), (_MAX, 1)]],
    ),
    # Chen et al. 2019, CIFAR-10.
    "PDARTS": _shared(
        "PDARTS",
        normal=[[(_SKIP, 0), (_DIL3, 1)], [(_SKIP, 0), (_SEP3, 1)], [(_SEP3, 1), (_SEP3, 3)], [(_SEP3, 0), (_DIL5, 4)]],
        reduce=[[(_AVG, 0), (_SEP5, 1)], [(_SEP3, 0), (_DIL5, 2)], [(_MAX, 0), (_DIL3, 1)], [(_DIL3, 1), (_DIL5, 3)]],
    ),
    # Xu et al. 2019, CIFAR-10.
    "PC_DARTS": _shared(
        "PC_DARTS",
        normal=[[(_SEP3, 1), (_SKIP, 0)], [(_SEP3, 0), (_DIL3, 1)], [(_SEP5, 0), (_SEP3, 1)], [(_AVG, 0), (_DIL3, 1)]],
        reduce=[[(_SEP5, 1), (_MAX, 0)], [(_SEP5, 1), (_SEP5, 2)], [(_SEP3, 0), (_SEP3, 3)], [(_SEP3, 1), (_SEP3, 2)]],
    ),
    # Chu et al. 2020.
    "NOISY_DARTS_A": _shared(
        "NOISY_DARTS_A",
        normal=[[(_SEP3, 1), (_SEP3, 0)], [(_SKIP, 0), (_DIL3, 2)], [(_DIL3, 3), (_SEP3, 1)], [(_DIL5, 4), (_DIL3, 3)]],
        reduce=[[(_MAX, 0), (_DIL5, 1)], [(_SKIP, 2), (_MAX, 0)], [(_SKIP, 2), (_SKIP, 3)], [(_SKIP, 2), (_DIL5, 4)]],
    ),
    # StacNAS, CIFAR-10; the published edge order within a node is unknown, listed by source.
    "STACNAS_CIFAR10": _shared(
        "STACNAS_CIFAR10",
        normal=[[(_SKIP, 0), (_SEP3, 1)], [(_SKIP, 0), (_SEP3, 2)], [(_SEP3, 0), (_SEP3, 1)], [(_SEP3, 0), (_SEP3, 2)]],
        reduce=[[(_MAX, 0), (_SKIP, 1)], [(_AVG, 0), (_DIL5, 2)], [(_AVG, 0), (_DIL5, 3)], [(_SEP5, 0), (_DIL5, 3)]],
    ),
    # H^c-DAS stage-specific cells, CIFAR-10 search (paper Table 1).
    "HC_DAS": Genotype(
        cells={
            "normal1": CellGenotype(
                [[(_SEP3, 0), (_SEP3, 1)], [(_SEP3, 0), (_SEP3, 1)], [(_SEP3, 0), (_SEP3, 1)], [(_SEP3, 2), (_SEP3, 3)]]
            ),
            "reduce1": CellGenotype(
                [[(_MAX, 0), (_SKIP, 1)], [(_MAX, 0), (_MAX, 2)], [(_SEP3, 0), (_SKIP, 1)], [(_SEP3, 0), (_DIL3, 4)]]
            ),
            "normal2": CellGenotype(
                [[(_SKIP, 0), (_DIL3, 1)], [(_SKIP, 0), (_SEP3, 1)], [(_SKIP, 0), (_SEP3, 1)], [(_SKIP, 0), (_SEP3, 1)]]
            ),
            "reduce2": CellGenotype(
                [[(_DIL3, 1), (_MAX, 0)], [(_MAX, 0), (_DIL5, 2)], [(_MAX, 0), (_DIL5, 3)], [(_MAX, 0), (_SKIP, 4)]]
            ),
            "normal3": CellGenotype(
                [[(_DIL5, 0), (_SEP3, 1)], [(_SEP3, 1), (_DIL3, 2)], [(_DIL3, 0), (_SEP5, 2)], [(_SEP5, 3), (_SEP3, 4)]]
            ),
        },
        name="HC_DAS",
    ),
    # H^s-DAS stage DAGs, CIFAR-10: 6 cells per stage, output = cells 4 and 5 in every stage.
    "HS_DAS_CIFAR": _stages(
        "HS_DAS_CIFAR",
        (6, 7),
        [[(_SKIP, 0), (_SKIP, 1)], [(_SKIP, 0), (_SKIP, 1)], [(_SKIP, 1), (_MAX, 2)],
         [(_MAX, 2), (_SKIP, 4)], [(_MAX, 3), (_SKIP, 5)], [(_MAX, 4), (_SKIP, 6)]],
        [[(_MAX, 0), (_MAX, 1)], [(_SKIP, 0), (_SKIP, 1)], [(_SKIP, 1), (_SKIP, 2)],
         [(_MAX, 2), (_SKIP, 3)], [(_MAX, 3), (_SKIP, 5)], [(_AVG, 4), (_SKIP, 6)]],
        [[(_SKIP, 0), (_SKIP, 1)], [(_SKIP, 1), (_SKIP, 2)], [(_SKIP, 2), (_SKIP, 3)],
         [(_MAX, 2), (_SKIP, 3)], [(_MAX, 3), (_SKIP, 5)], [(_MAX, 4), (_MAX, 5)]],
    ),
    # H^s-DAS stage DAGs, ImageNet: 4 cells per stage, output = cells 2 and 3.
    "HS_DAS_IMAGENET": _stages(
        "HS_DAS_IMAGENET",
        (4, 5),
        [[(_MAX, 0), (_MAX, 1)], [(_SKIP, 0), (_SKIP, 2)], [(_SKIP, 2), (_SKIP, 3)], [(_SKIP, 2), (_AVG, 4)]],
        [[(_SKIP, 0), (_SKIP, 1)], [(_SKIP, 1), (_SKIP, 2)], [(_SKIP, 2), (_SKIP, 3)], [(_SKIP, 3), (_SKIP, 4)]],
        [[(_SKIP, 0), (_SKIP, 1)], [(_SKIP, 1), (_SKIP, 2)], [(_SKIP, 2), (_SKIP, 3)], [(_MAX, 2), (_SKIP, 3)]],
    ),
}

# A transcription error must fail at import, not in the middle of a training run.
for _genotype in REGISTRY.values():
    _genotype.validate()
del _genotype


def resolve(spec: str) -> Genotype:
    """A genotype from a registry name (case-insensitive) or a path to a genotype file.

    A registry name wins over a file of the same name in the working directory.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise GenotypeError(f"expected a registry name or a genotype file path, got {spec!r}")
    spec = os.fspath(spec)
    by_lower = {name.lower(): genotype for name, genotype in REGISTRY.items()}
    if spec.lower() in by_lower:
        return by_lower[spec.lower()]
    if os.path.isfile(spec):
        return Genotype.load(spec)
    if os.path.exists(spec):
        raise GenotypeError(f"genotype path {spec!r} exists but is not a file")
    raise GenotypeError(
        f"unknown genotype {spec!r}: not a registry name (known: {', '.join(REGISTRY)}) "
        f"and the file {spec!r} does not exist"
    )

