"""StacNAS operator clusters (BUILD_NOTES "StacNAS operator clusters"): the cluster set, stage 1's op set of one
representative per cluster, the per-edge winning clusters that stage 1 hands to stage 2, and stage 2's
per-edge op sets.

StacNAS (Li et al., 2019) searches in two stages. Ops whose outputs are strongly correlated (the two
separable convolutions, say) split the α mass of an edge between them in a DARTS search, so a strong kind of
op can lose to a weaker one that has no sibling. Stage 1 therefore searches over *clusters*, one
representative op standing for each; stage 2 restricts every edge to the members of the cluster that won it
in stage 1, plus 'none', and searches again (on a deeper supernet).

The clusters are data: ``DEFAULT_CLUSTERS``, or a ``hdas_tf.clusters/1`` JSON document (``load_clusters``), e.g.
one ``propose_clusters`` made from the ops' output correlations on a trained supernet. ``vote_splitting`` flags
the edges of a search where correlated ops split the weight (BUILD_NOTES "StacNAS operator clusters").
The hand-off is an ``EdgeClusters`` document (``hdas_tf.edge_clusters/1``) that a stage-1 search writes as
``RUN_DIR/edge_clusters.json`` (and per epoch under ``genotypes/``).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from hdas_tf.errors import ClusterError
from hdas_tf.space.derive import alpha_matrix
from hdas_tf.space.op_registry import CELL_OPS, op_spec

CLUSTERS_FORMAT = "hdas_tf.clusters/1"
EDGE_CLUSTERS_FORMAT = "hdas_tf.edge_clusters/1"
HANDOFF_NAME = "edge_clusters"  # RUN_DIR/edge_clusters.json


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A named group of cell ops; ``representative`` stands for the group in stage 1 (default: the first op)."""

    name: str
    ops: tuple[str, ...]
    representative: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.representative is None and self.ops:
            object.__setattr__(self, "representative", self.ops[0])

    def to_dict(self) -> dict:
        return {"name": self.name, "ops": list(self.ops), "representative": self.representative}


# BUILD_NOTES "StacNAS operator clusters": {pooling: max/avg}, {skip}, {separable: sep3/sep5}, {dilated: dil3/dil5};
# 'none' is not a cluster, it is searched beside them in both stages.
DEFAULT_CLUSTERS = (
    Cluster("pooling", ("max_pool_3x3", "avg_pool_3x3")),
    Cluster("skip", ("skip_connect",)),
    Cluster("separable", ("sep_conv_3x3", "sep_conv_5x5")),
    Cluster("dilated", ("dil_conv_3x3", "dil_conv_5x5")),
)


def validate_clusters(clusters, where: str = "clusters") -> tuple[Cluster, ...]:
    """Checks a cluster set and returns it as a tuple; every error names the offending cluster."""
    clusters = tuple(clusters)
    if not clusters:
        raise ClusterError(f"{where}: no clusters")
    seen_names, seen_ops = set(), {}
    for c in clusters:
        if not isinstance(c, Cluster):
            raise ClusterError(f"{where}: expected Cluster entries, got {c!r}")
        if not isinstance(c.name, str) or not c.name:
            raise ClusterError(f"{where}: a cluster needs a non-empty name, got {c.name!r}")
        if c.name in seen_names:
            raise ClusterError(f"{where}: cluster name {c.name!r} appears twice")
        seen_names.add(c.name)
        if not c.ops:
            raise ClusterError(f"{where}: cluster {c.name!r} has no ops")
        for op in c.ops:
            if op == "none":
                raise ClusterError(f"{where}: cluster {c.name!r} lists 'none'; 'none' is searched beside the "
                                   "clusters, not inside one")
            if op not in CELL_OPS:
                raise ClusterError(f"{where}: cluster {c.name!r} has unknown op {op!r}; known ops: "
                                   f"{', '.join(o for o in CELL_OPS if o != 'none')}")
            if op in seen_ops:
                raise ClusterError(f"{where}: op {op!r} is in both cluster {seen_ops[op]!r} and {c.name!r}")
            seen_ops[op] = c.name
        if c.representative not in c.ops:
            raise ClusterError(f"{where}: representative {c.representative!r} of cluster {c.name!r} is not one of "
                               f"its ops {list(c.ops)}")
    return clusters


def clusters_from_dict(doc, where: str = "clusters document") -> tuple[Cluster, ...]:
    """The cluster set of a ``hdas_tf.clusters/1`` document: ``{"format": ..., "clusters": [{"name": ...,
    "ops": [...], "representative": ...}, ...]}`` (``representative`` optional)."""
    if not isinstance(doc, dict) or "clusters" not in doc:
        raise ClusterError(f"{where}: expected a JSON object with a 'clusters' list")
    if doc.get("format", CLUSTERS_FORMAT) != CLUSTERS_FORMAT:
        raise ClusterError(f"{where}: unsupported format {doc['format']!r}; this version reads {CLUSTERS_FORMAT!r}")
    entries = doc["clusters"]
    if not isinstance(entries, list):
        raise ClusterError(f"{where}: 'clusters' must be a list")
    out = []
    for n, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("ops"), list) or "name" not in e:
            raise ClusterError(f"{where}: cluster #{n} must be an object with 'name' and an 'ops' list, got {e!r}")
        unknown = set(e) - {"name", "ops", "representative"}
        if unknown:
            raise ClusterError(f"{where}: cluster #{n} has unknown keys {sorted(unknown)}")
        out.append(Cluster(e["name"], tuple(e["ops"]), e.get("representative")))
    return validate_clusters(out, where)


def clusters_to_dict(clusters) -> dict:
    return {"format": CLUSTERS_FORMAT, "clusters": [c.to_dict() for c in validate_clusters(clusters)]}


def _read_json(path, what: str):
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ClusterError(f"{what} file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClusterError(f"cannot read {what} file {path!r}: {e}") from None


def load_clusters(path) -> tuple[Cluster, ...]:
    """A cluster set from a JSON file (``clusters_from_dict``); errors name the file."""
    return clusters_from_dict(_read_json(path, "clusters"), where=f"clusters file {os.fspath(path)!r}")


def _canonical(ops) -> tuple[str, ...]:
    return tuple(o for o in CELL_OPS if o in set(ops))


def representative_ops(clusters) -> tuple[str, ...]:
    """Stage 1's cell op set: one representative per cluster plus 'none', in canonical (α) order."""
    return _canonical([c.representative for c in validate_clusters(clusters)] + ["none"])


@dataclasses.dataclass(frozen=True)
class EdgeClusters:
    """The stage-1 → stage-2 hand-off: per α group (``normal``/``reduce``, or the five H^c-DAS groups), the
    name of the cluster that won each edge, edges in α row order (node by node, then by source)."""

    clusters: tuple[Cluster, ...]
    steps: int
    cells: tuple[tuple[str, tuple[str, ...]], ...]  # (group, per-edge cluster names)

    def __post_init__(self):
        object.__setattr__(self, "clusters", validate_clusters(self.clusters, "edge clusters"))
        cells = tuple((g, tuple(names)) for g, names in (self.cells.items() if isinstance(self.cells, dict)
                                                          else self.cells))
        object.__setattr__(self, "cells", cells)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ClusterError(f"edge clusters: steps must be a positive integer, got {self.steps!r}")
        edges = sum(i + 2 for i in range(self.steps))
        known = {c.name for c in self.clusters}
        if not cells:
            raise ClusterError("edge clusters: no cell groups")
        for group, names in cells:
            if len(names) != edges:
                raise ClusterError(f"edge clusters: group {group!r} has {len(names)} edges; {self.steps} nodes "
                                   f"have {edges}")
            for k, name in enumerate(names):
                if name not in known:
                    raise ClusterError(f"edge clusters: edge {k} of group {group!r} names unknown cluster {name!r}; "
                                       f"clusters: {sorted(known)}")

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(g for g, _ in self.cells)

    def edge_ops(self) -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
        """Stage 2's per-edge op sets: the winning cluster's members plus 'none', in canonical order, as
        ``SearchSpace.edge_ops`` takes them."""
        members = {c.name: c.ops for c in self.clusters}
        return tuple((g, tuple(_canonical(members[n] + ("none",)) for n in names)) for g, names in self.cells)

    def op_union(self) -> tuple[str, ...]:
        """Every op any edge of stage 2 may use, 'none' included, in canonical order (α's last axis)."""
        return _canonical({op for _, per_edge in self.edge_ops() for ops in per_edge for op in ops})

    def to_dict(self) -> dict:
        return {"format": EDGE_CLUSTERS_FORMAT, "steps": self.steps,
                "clusters": [c.to_dict() for c in self.clusters],
                "cells": {g: list(names) for g, names in self.cells}}

    @classmethod
    def from_dict(cls, doc, where: str = "edge clusters document") -> EdgeClusters:
        if not isinstance(doc, dict):
            raise ClusterError(f"{where}: expected a JSON object")
        if doc.get("format") != EDGE_CLUSTERS_FORMAT:
            raise ClusterError(f"{where}: format must be {EDGE_CLUSTERS_FORMAT!r} (a StacNAS stage-1 search writes "
                               f"RUN_DIR/{HANDOFF_NAME}.json), got {doc.get('format')!r}")
        missing = {"steps", "clusters", "cells"} - set(doc)
        if missing:
            raise ClusterError(f"{where}: missing keys {sorted(missing)}")
        if not isinstance(doc["cells"], dict) or not all(isinstance(v, list) for v in doc["cells"].values()):
            raise ClusterError(f"{where}: 'cells' must map each cell group to a list of cluster names")
        clusters = clusters_from_dict({"clusters": doc["clusters"]}, where)
        try:
            return cls(clusters, doc["steps"], tuple(doc["cells"].items()))
        except ValueError as e:
            raise ClusterError(f"{where}: {e}") from None

    @classmethod
    def load(cls, path) -> EdgeClusters:
        return cls.from_dict(_read_json(path, "edge clusters"), where=f"edge clusters file {os.fspath(path)!r}")


def derive_edge_clusters(arch: dict, clusters, op_names, groups, steps: int = 4) -> EdgeClusters:
    """Stage 1 → stage 2: the cluster of each edge's strongest non-'none' op (argmax of α over the
    representatives; softmax is monotonic, so raw α and probabilities agree). Ties go to the lower column.

    Args:
      arch: name → array; ``alpha_{group}`` of shape [edges, len(op_names)] for every group.
      clusters: the stage-1 cluster set; ``op_names`` must be its ``representative_ops``.
      groups: the cell α groups, in order.
    """
    clusters = validate_clusters(clusters)
    if tuple(op_names) != representative_ops(clusters):
        raise ClusterError(f"stage-1 op set {list(op_names)} is not the clusters' representatives + 'none' "
                           f"{list(representative_ops(clusters))}")
    by_rep = {c.representative: c.name for c in clusters}
    columns = [o for o, name in enumerate(op_names) if name != "none"]
    shape = (sum(i + 2 for i in range(steps)), len(op_names))
    cells = []
    for g in groups:
        a = alpha_matrix(arch[f"alpha_{g}"], shape, f"alpha_{g}")
        best = [columns[int(np.argmax(row[columns]))] for row in a]
        cells.append((g, tuple(by_rep[op_names[o]] for o in best)))
    return EdgeClusters(clusters, steps, tuple(cells))


# === Proposing clusters from operator correlations ===

# A cluster is named after the kinds of its members (BUILD_NOTES "StacNAS operator clusters"), so that the
# proposal on a trained supernet reads like the published set when it finds it.
_KIND_NAMES = {"pool": "pooling", "skip": "skip", "sep_conv": "separable", "dil_conv": "dilated"}


def _cluster_name(ops) -> str:
    kinds = []
    for op in ops:
        name = _KIND_NAMES[op_spec(op).kind]
        if name not in kinds:
            kinds.append(name)
    return "+".join(kinds)


def propose_clusters(corr, op_names, threshold: float | None = None,
                     num_clusters: int | None = None) -> tuple[Cluster, ...]:
    """Operator clusters from a correlation matrix: average-linkage agglomerative clustering on the distance
    1 − ρ (SciPy's ``linkage``/``fcluster``), cut at distance ``threshold`` or into ``num_clusters`` clusters
    (exactly one of the two). Each cluster's representative is the member with the highest mean correlation
    to the other members (ties: canonical op order). Clusters come in the canonical order of their first op.

    Args:
      corr: array [ops, ops], symmetric, the Pearson correlations of the ops' outputs (finite).
      op_names: the ops of the rows/columns; cell ops other than 'none'.
    """
    from scipy.cluster.hierarchy import fcluster, linkage  # SciPy only where clusters are proposed
    from scipy.spatial.distance import squareform

    op_names = tuple(op_names)
    rho = np.asarray(corr, dtype=np.float64)
    p = len(op_names)
    if rho.shape != (p, p):
        raise ValueError(f"propose_clusters: correlation matrix of shape {rho.shape} for {p} ops {list(op_names)}")
    if not np.all(np.isfinite(rho)):
        raise ValueError("propose_clusters: the correlation matrix has non-finite entries (an op with constant "
                         "output?); cannot cluster")
    if (threshold is None) == (num_clusters is None):
        raise ValueError("propose_clusters: give exactly one of threshold and num_clusters")
    if num_clusters is not None and not 1 <= num_clusters <= p:
        raise ValueError(f"num_clusters must be between 1 and the number of ops ({p}), received {num_clusters}")
    if threshold is not None and not 0.0 <= threshold <= 2.0:
        raise ValueError(f"threshold is a distance 1 - rho in [0, 2], received {threshold}")
    validate_clusters([Cluster(f"op{i}", (o,)) for i, o in enumerate(op_names)], "propose_clusters")
    if p == 1:
        labels = np.ones(1, dtype=int)
    else:
        distance = np.clip(1.0 - (rho + rho.T) / 2.0, 0.0, 2.0)
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(distance, checks=False), method="average")
        labels = (fcluster(tree, t=threshold, criterion="distance") if threshold is not None
                  else fcluster(tree, t=num_clusters, criterion="maxclust"))
    order = sorted(range(p), key=lambda i: CELL_OPS.index(op_names[i]))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(int(labels[i]), []).append(i)
    out, used = [], {}
    for members in groups.values():
        if len(members) == 1:
            rep = members[0]
        else:  # max over members of the mean ρ to the others; max() keeps the first (canonical) on ties
            rep = max(members, key=lambda i: np.mean([rho[i, j] for j in members if j != i]))
        ops = tuple(op_names[i] for i in members)
        name = _cluster_name(ops)
        used[name] = used.get(name, 0) + 1
        out.append(Cluster(name if used[name] == 1 else f"{name}_{used[name]}", ops, op_names[rep]))
    return validate_clusters(out, "proposed clusters")


# === Vote splitting ===


@dataclasses.dataclass(frozen=True)
class VoteSplit:
    """One edge's vote-splitting check: ``top_op`` has the largest α; ``cluster`` has the largest summed
    softmax weight of its members and ``cluster_best`` is its member with the largest α. ``split``: the two
    differ, i.e. the edge's strongest op lost to a cluster whose weight is spread over several members."""

    edge: int
    top_op: str
    cluster: str
    cluster_best: str

    @property
    def split(self) -> bool:
        return self.top_op != self.cluster_best


def vote_splitting(alpha, op_names, clusters, mask=None) -> list[VoteSplit]:
    """Per edge of one α group [edges, ops], the vote-splitting check (``VoteSplit``) (StacNAS's motivation:
    correlated ops share an edge's weight). The weights are softmax(α) over the edge's ops (``mask``: those an
    edge searches), 'none' left out of both the maximum and the sums; an op in no cluster counts as a cluster
    of its own. Ties go to the lower column (op) and the first cluster."""
    op_names = tuple(op_names)
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(op_names):
        raise ValueError(f"vote_splitting: alpha of shape {a.shape} for ops {list(op_names)}")
    m = np.ones(a.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != a.shape:
        raise ValueError(f"vote_splitting: mask of shape {m.shape} for alpha of shape {a.shape}")
    owner = {op: c.name for c in validate_clusters(clusters) for op in c.ops}
    out = []
    for e, (row, allowed) in enumerate(zip(a, m)):
        columns = [o for o, name in enumerate(op_names) if name != "none" and allowed[o]]
        if not columns:
            continue
        w = np.exp(row[columns] - row[columns].max())  # softmax up to the common denominator
        top = columns[int(np.argmax(row[columns]))]
        sums, best = {}, {}
        for o, weight in zip(columns, w):
            c = owner.get(op_names[o], op_names[o])
            sums[c] = sums.get(c, 0.0) + weight
            if c not in best or row[o] > row[best[c]]:
                best[c] = o
        cluster = max(sums, key=lambda c: sums[c])
        out.append(VoteSplit(e, op_names[top], cluster, op_names[best[cluster]]))
    return out
