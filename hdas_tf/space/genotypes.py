"""Genotypes: discrete DARTS / H-DAS architectures as data — the types, the JSON document, validation,
and reading and writing genotype files.

All indices are 0-based, as in the JSON document. The dataclasses do not validate themselves (a parser may
build a genotype over a custom op set and check it with that set); every boundary calls ``validate``, and
every problem is a ``GenotypeError`` (a ValueError) naming the offending entry.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import types
from collections.abc import Mapping

from hdas_tf.errors import GenotypeError
from hdas_tf.files import write_text_atomic
from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS

FORMAT = "hdas_tf.genotype/1"
SHARED_KEYS = ("normal", "reduce")
STAGE_SPECIFIC_KEYS = ("normal1", "reduce1", "normal2", "reduce2", "normal3")

Edge = tuple[str, int]  # (op_name, source_index)

# A shared-cell genotype serves every stage-specific group from its one normal / one reduce cell.
_SHARED_GROUP = {"normal": "normal", "reduce": "reduce", "normal1": "normal", "normal2": "normal", "normal3": "normal",
                 "reduce1": "reduce", "reduce2": "reduce"}
_DOC_KEYS = ("format", "name", "cells", "stages", "stage_lengths")


# === Types ===


def _freeze(value):
    """Lists (and ranges) to tuples, recursively, so that equal genotypes compare and hash equal.

    Anything else is left as it is; ``validate`` reports it with the entry's name.
    """
    if isinstance(value, (list, tuple, range)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class CellGenotype:
    """A discrete cell: one tuple of (op, source) edges per intermediate node, and the concat indices.

    Source 0 = c_{k-2}, 1 = c_{k-1}, 2 + i = node i; node i may read sources 0..i+1.
    """

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...] = (2, 3, 4, 5)

    def __post_init__(self):
        object.__setattr__(self, "nodes", _freeze(self.nodes))
        object.__setattr__(self, "concat", _freeze(self.concat))


@dataclasses.dataclass(frozen=True)
class StageGenotype:
    """A discrete stage DAG (H^s-DAS): one tuple of (op, state) edges per cell, and the output pair.

    State 0, 1 = the stage-input projections, t >= 2 = cell t-2; cell j may read states 0..j+1.
    ``concat`` = the two state indices concatenated into the stage output.
    """

    cells: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "cells", _freeze(self.cells))
        object.__setattr__(self, "concat", _freeze(self.concat))


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A whole architecture: the cell level, the stage level, and optionally the searched stage lengths.

    Args:
        cells: dict. Keys exactly ``SHARED_KEYS`` (DARTS: one normal + one reduce cell) or exactly
            ``STAGE_SPECIFIC_KEYS`` (H^c-DAS); None for a stage-only genotype (H^s-DAS DAGs to be combined
            with cells from elsewhere, see ``with_stages``). Stored read-only.
        stages: tuple of StageGenotype. Three entries (stage-specific DAGs, H^s-DAS), one (a DAG shared by
            all stages, H^s-DAS*), or None for the conventional chain. Defaults to None.
        stage_lengths: tuple of 3 ints. Cells per stage chosen by the cell-distribution search (β).
            Defaults to None.
        name: str. Defaults to None.

    Equality compares all four fields; the genotype is hashable.
    """

    cells: dict[str, CellGenotype] | None
    stages: tuple[StageGenotype, ...] | None = None
    stage_lengths: tuple[int, ...] | None = None
    name: str | None = None

    def __post_init__(self):
        # A read-only view: registry genotypes are shared objects and must not be edited in place.
        if isinstance(self.cells, Mapping):
            object.__setattr__(self, "cells", types.MappingProxyType(dict(self.cells)))
        if isinstance(self.stages, (list, tuple)):
            object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "stage_lengths", _freeze(self.stage_lengths))

    def __hash__(self):
        cells = None if self.cells is None else tuple(sorted(self.cells.items()))
        return hash((cells, self.stages, self.stage_lengths, self.name))

    def __repr__(self):
        cells = None if self.cells is None else dict(self.cells)
        return (f"Genotype(cells={cells!r}, stages={self.stages!r}, "
                f"stage_lengths={self.stage_lengths!r}, name={self.name!r})")

    # Immutable: copies are the object itself (a MappingProxy cannot be deep-copied field by field).
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # --- Access ---

    @property
    def cell_sharing(self) -> str | None:
        """'shared' (normal/reduce), 'stage_specific' (normal1..normal3), or None without cells."""
        if self.cells is None:
            return None
        keys = set(self.cells)
        if keys == set(SHARED_KEYS):
            return "shared"
        if keys == set(STAGE_SPECIFIC_KEYS):
            return "stage_specific"
        raise GenotypeError(_cell_keys_message(self.cells))

    def cell_for(self, group: str) -> CellGenotype:
        """The cell of a cell group (BUILD_NOTES "Cells, chains and stage-specific cells": normal1, reduce1,
        normal2, reduce2, normal3).

        A shared genotype serves normal1/2/3 with 'normal' and reduce1/2 with 'reduce'. A stage-specific
        genotype has no single 'normal'/'reduce' cell, so asking for one is an error.
        """
        if self.cells is None:
            raise GenotypeError(f"genotype {self.name!r} has no cells (a stage-only genotype); combine it with a cell "
                                "genotype first, e.g. cells.with_stages(this)")
        if group not in _SHARED_GROUP:
            raise GenotypeError(f"unknown cell group {group!r}; known groups: "
                                f"{', '.join(STAGE_SPECIFIC_KEYS + SHARED_KEYS)}")
        sharing = self.cell_sharing
        if sharing == "shared":
            return self.cells[_SHARED_GROUP[group]]
        if group in SHARED_KEYS:
            raise GenotypeError(f"genotype {self.name!r} has stage-specific cells ({', '.join(STAGE_SPECIFIC_KEYS)}); "
                                f"ask for one of those, not {group!r}")
        return self.cells[group]

    def stage_for(self, s: int) -> StageGenotype:
        """The DAG of stage s (0..2). A shared DAG (one entry) serves all three stages.

        Without stage DAGs but with ``stage_lengths`` (a cell-distribution result) the stage is the
        conventional chain of that length; without both there is no stage level to return.
        """
        if not is_int(s) or not 0 <= s <= 2:
            raise GenotypeError(f"stage index must be 0, 1 or 2, got {s!r}")
        if self.stages is None:
            if self.stage_lengths is not None:
                return chain_stage(self.stage_lengths[s])
            raise GenotypeError(f"genotype {self.name!r} has no stage DAGs (chain stage level) and no stage_lengths; "
                                "use chain_stage(n) for a chain stage of n cells")
        return self.stages[s if len(self.stages) == 3 else 0]

    def with_stages(self, other: Genotype) -> Genotype:
        """The cells of this genotype with the stage DAGs and stage lengths of ``other``.

        This is how a stage-only genotype (H^s-DAS DAGs) is put on top of searched or published cells.
        The name joins both names with '+'.
        """
        if not isinstance(other, Genotype):
            raise GenotypeError(f"with_stages expects a Genotype, got {type(other).__name__}")
        names = [n for n in (self.name, other.name) if n]
        return Genotype(cells=None if self.cells is None else dict(self.cells), stages=other.stages,
                        stage_lengths=other.stage_lengths, name="+".join(names) if names else None)

    # --- Validation ---

    def validate(self, window: int | None = None) -> None:
        """Raise ValueError on the first problem (BUILD_NOTES "Genotype format and registry"), naming the offending
        entry.

        Args:
            window: int. The stage level's sliding window m (BUILD_NOTES "Stage DAGs, the sliding window and β"):
                when given, every source of stage cell j must be one of the last min(m, j+2) states,
                i.e. >= (j+2) - m.
        """
        if window is not None and (not is_int(window) or window < 1):
            raise GenotypeError(f"window must be a positive integer, got {window!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise GenotypeError(f"name must be a string, got {self.name!r}")
        if self.cells is None and self.stages is None:
            raise GenotypeError("genotype is empty: it has neither cells nor stages")
        if self.cells is not None:
            if not isinstance(self.cells, Mapping):
                raise GenotypeError(f"cells must be a mapping from cell key to cell, got {type(self.cells).__name__}")
            keys = set(self.cells)
            if keys != set(SHARED_KEYS) and keys != set(STAGE_SPECIFIC_KEYS):
                raise GenotypeError(_cell_keys_message(self.cells))
            for key in _ordered_keys(self.cells):
                validate_cell(self.cells[key], f"cell {key!r}")
        if self.stages is not None:
            if not isinstance(self.stages, tuple):
                raise GenotypeError(f"stages must be a list of stage DAGs, got {type(self.stages).__name__}")
            if len(self.stages) not in (1, 3):
                raise GenotypeError(f"stages: expected 3 stage DAGs (stage-specific) or 1 (shared by all stages), "
                                    f"got {len(self.stages)}")
            for s, stage in enumerate(self.stages):
                validate_stage(stage, f"stage {s}")
                if window is not None:
                    _check_window(stage, f"stage {s}", window)
        if self.stage_lengths is not None:
            lengths = self.stage_lengths
            if not (isinstance(lengths, tuple) and len(lengths) == 3 and all(is_int(n) and n > 0 for n in lengths)):
                raise GenotypeError(f"stage_lengths: expected 3 positive integers (cells per stage), got {lengths!r}")
            if self.stages is not None:
                for s in range(3):
                    n_cells = len(self.stage_for(s).cells)
                    if n_cells != lengths[s]:
                        raise GenotypeError(f"stage {s}: the DAG has {n_cells} cells but stage_lengths[{s}] is "
                                            f"{lengths[s]}")

    # --- Serialisation ---

    def to_dict(self) -> dict:
        """The JSON-ready document of BUILD_NOTES "Genotype format and registry"; fields that are None are omitted."""
        self.validate()
        doc = {"format": FORMAT}
        if self.name is not None:
            doc["name"] = self.name
        if self.cells is not None:
            doc["cells"] = {key: {"nodes": [_edges_to_json(node) for node in self.cells[key].nodes],
                                  "concat": [int(c) for c in self.cells[key].concat]}
                            for key in _ordered_keys(self.cells)}
        if self.stages is not None:
            doc["stages"] = [{"cells": [_edges_to_json(cell) for cell in stage.cells],
                              "concat": [int(c) for c in stage.concat]} for stage in self.stages]
        if self.stage_lengths is not None:
            doc["stage_lengths"] = [int(n) for n in self.stage_lengths]
        return doc

    @classmethod
    def from_dict(cls, d: dict) -> Genotype:
        """Read and validate a genotype document.

        The "format" key must be ``FORMAT`` when present. A document without "format" is accepted only if
        it has "cells" or "stages" (a genotype written by hand); any other document without it is rejected,
        and so are unknown top-level keys (a misspelt "stage_length" must not be silently dropped).
        A cell may be written as ``{"nodes": [...], "concat": [...]}`` or as the bare list of nodes
        (concat then defaults to all nodes, [2, 3, 4, 5] for four); a stage without "concat" defaults
        to its last two cells, (n, n+1).
        """
        if not isinstance(d, Mapping):
            raise GenotypeError(f"a genotype document must be a JSON object, got {type(d).__name__}")
        if "format" in d:
            if d["format"] != FORMAT:
                raise GenotypeError(f"unsupported genotype format {d['format']!r}; this version reads {FORMAT!r}")
        elif "cells" not in d and "stages" not in d:
            raise GenotypeError(f"not a genotype document: no 'format' key (expected {FORMAT!r}) and no 'cells' or "
                                "'stages'")
        unknown = [k for k in d if k not in _DOC_KEYS]
        if unknown:
            raise GenotypeError(f"unknown genotype document keys {unknown!r}; known keys: {', '.join(_DOC_KEYS)}")
        cells = d.get("cells")
        if cells is not None:
            if not isinstance(cells, Mapping):
                raise GenotypeError(f"cells must be an object mapping cell key to cell, got {type(cells).__name__}")
            cells = {key: _cell_from_json(entry, f"cell {key!r}") for key, entry in cells.items()}
        stages = d.get("stages")
        if stages is not None:
            if not isinstance(stages, (list, tuple)):
                raise GenotypeError(f"stages must be a list of stage DAGs, got {type(stages).__name__}")
            stages = tuple(_stage_from_json(entry, f"stage {s}") for s, entry in enumerate(stages))
        lengths = d.get("stage_lengths")
        if lengths is not None and not isinstance(lengths, (list, tuple)):
            raise GenotypeError(f"stage_lengths: expected 3 positive integers (cells per stage), got {lengths!r}")
        genotype = cls(cells=cells, stages=stages, stage_lengths=lengths, name=d.get("name"))
        genotype.validate()
        return genotype

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            doc = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise GenotypeError(f"not a genotype JSON document: {e}") from None
        return cls.from_dict(doc)

    def save(self, path) -> None:
        """Write the JSON document atomically (``hdas_tf.files``): a reader, or a search resumed after a crash,
        never sees a half-written genotype file."""
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> Genotype:
        """Read a genotype file: our JSON document, or a PyTorch genotype string (``from_pytorch_string``).

        Every error names the path.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise GenotypeError(f"genotype file {path!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise GenotypeError(f"cannot read genotype file {path!r}: {e}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            # Here, not at the top: pytorch_import builds Genotype objects, so it imports this module.
            from hdas_tf.space import pytorch_import

            if not pytorch_import.looks_like_pytorch_string(text):
                raise GenotypeError(f"{path}: neither a genotype JSON document ({e}) nor a PyTorch genotype "
                                    "string") from None
            try:
                return pytorch_import.from_pytorch_string(text)
            except ValueError as e2:
                raise GenotypeError(f"{path}: {e2}") from None
        try:
            return cls.from_dict(doc)
        except ValueError as e:
            raise GenotypeError(f"{path}: {e}") from None


# === Validation ===


def is_int(x) -> bool:
    """An integer that is not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _known_ops(op_names) -> str:
    return ", ".join(o for o in op_names if o != "none")


def _ordered_keys(cells) -> list:
    canonical = STAGE_SPECIFIC_KEYS if set(cells) == set(STAGE_SPECIFIC_KEYS) else SHARED_KEYS
    return [k for k in canonical if k in cells] + [k for k in cells if k not in canonical]


def _cell_keys_message(cells) -> str:
    return (f"cells: keys {sorted(map(repr, cells))} are neither exactly {list(SHARED_KEYS)} (shared cells) "
            f"nor exactly {list(STAGE_SPECIFIC_KEYS)} (stage-specific cells)")


def _check_edges(edges, where: str, op_names, max_src: int, what: str) -> None:
    """The rules shared by cell nodes and stage cells (BUILD_NOTES "Genotype format and registry"): known non-'none'
    ops, integer sources in 0..max_src, at most one edge per source."""
    if not isinstance(edges, (tuple, list)) or not edges:
        raise GenotypeError(f"{where} has no edges; every {what} needs at least one (op, source) edge, got {edges!r}")
    seen = {}
    for e, edge in enumerate(edges):
        if not isinstance(edge, (tuple, list)) or len(edge) != 2:
            raise GenotypeError(f"{where} edge {e}: expected an (op, source) pair, got {edge!r}")
        op, src = edge
        if not isinstance(op, str):
            raise GenotypeError(f"{where} edge {e}: op must be a string, got {op!r}")
        if op == "none":
            # 'none' only exists in the search space: a derived edge is either there or not.
            raise GenotypeError(f"{where} edge {e}: op 'none' is not allowed in a derived genotype")
        if op_names is not None and op not in op_names:
            raise GenotypeError(f"{where} edge {e}: unknown op {op!r}; known ops: {_known_ops(op_names)}")
        if not is_int(src):
            raise GenotypeError(f"{where} edge {e}: source must be an integer, got {src!r}")
        if not 0 <= src <= max_src:
            raise GenotypeError(f"{where} edge {e}: source {src} out of range; valid sources are 0..{max_src}")
        if src in seen:
            raise GenotypeError(f"{where} edge {e}: duplicate source {src} (edge {seen[src]} already reads it); "
                                f"a source feeds a {what} at most once")
        seen[src] = e


def validate_cell(cell: CellGenotype, where: str, op_names=CELL_OPS, inputs: int = 2) -> None:
    """Raise ValueError if ``cell`` is not a valid discrete cell; messages start with ``where``.

    Args:
        cell: CellGenotype.
        where: str. How to name the cell in messages, e.g. "cell 'normal'".
        op_names: sequence of str. The allowed ops ('none' is never allowed). Defaults to ``CELL_OPS``.
        inputs: int. Number of cell inputs (sources 0..inputs-1). Defaults to 2.
    """
    if not isinstance(cell, CellGenotype):
        raise GenotypeError(f"{where}: expected a CellGenotype, got {type(cell).__name__}")
    nodes = cell.nodes
    if not isinstance(nodes, tuple) or not nodes:
        raise GenotypeError(f"{where}: nodes must be a non-empty list of nodes, got {nodes!r}")
    for i, node in enumerate(nodes):
        _check_edges(node, f"{where} node {i}", op_names, max_src=i + inputs - 1, what="node")
    _check_cell_concat(cell.concat, where, low=inputs, high=inputs + len(nodes) - 1)


def _check_cell_concat(concat, where: str, low: int, high: int) -> None:
    # Only intermediate nodes: an input state of a reduction cell has the wrong spatial size to concat.
    if not isinstance(concat, tuple) or not concat:
        raise GenotypeError(f"{where} concat: expected a non-empty list of node indices, got {concat!r}")
    for c in concat:
        if not is_int(c) or not low <= c <= high:
            raise GenotypeError(f"{where} concat: index {c!r} out of range; valid indices are {low}..{high} (the "
                                "intermediate nodes)")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{where} concat: duplicate index in {list(concat)}")


def validate_stage(stage: StageGenotype, where: str, op_names=STAGE_OPS) -> None:
    """Raise ValueError if ``stage`` is not a valid stage DAG; messages start with ``where``.

    ``op_names=None`` checks the structure only (any op name).
    """
    if not isinstance(stage, StageGenotype):
        raise GenotypeError(f"{where}: expected a StageGenotype, got {type(stage).__name__}")
    cells = stage.cells
    if not isinstance(cells, tuple) or not cells:
        raise GenotypeError(f"{where}: cells must be a non-empty list of cells, got {cells!r}")
    for j, cell in enumerate(cells):
        _check_edges(cell, f"{where} cell {j}", op_names, max_src=j + 1, what="cell")
    concat, high = stage.concat, len(cells) + 1
    if not (isinstance(concat, tuple) and len(concat) == 2 and all(is_int(c) for c in concat)):
        raise GenotypeError(f"{where} concat: expected two state indices, got {concat!r}")
    for c in concat:
        if not 0 <= c <= high:
            raise GenotypeError(f"{where} concat: state index {c} out of range; valid states are 0..{high}")
    if concat[0] == concat[1]:
        raise GenotypeError(f"{where} concat: the two state indices must differ, got {list(concat)}")


def _check_window(stage: StageGenotype, where: str, window: int) -> None:
    # BUILD_NOTES "Stage DAGs, the sliding window and β": cell j's candidate sources are the last min(m, j+2) states.
    for j, cell in enumerate(stage.cells):
        low = max(0, j + 2 - window)
        for e, (_, src) in enumerate(cell):
            if src < low:
                raise GenotypeError(f"{where} cell {j} edge {e}: source {src} is outside the sliding window "
                                    f"of {window} states; valid sources are {low}..{j + 1}")


# === JSON helpers ===


def _edges_to_json(edges) -> list:
    return [[op, int(src)] for op, src in edges]


def _edges_from_json(edges, where: str) -> tuple:
    if not isinstance(edges, (list, tuple)):
        raise GenotypeError(f"{where}: expected a list of [op, source] edges, got {edges!r}")
    out = []
    for e, edge in enumerate(edges):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise GenotypeError(f"{where} edge {e}: expected [op, source], got {edge!r}")
        out.append(tuple(edge))
    return tuple(out)


def _cell_from_json(entry, where: str) -> CellGenotype:
    if isinstance(entry, (list, tuple)):
        nodes, concat = entry, None
    elif isinstance(entry, Mapping):
        unknown = [k for k in entry if k not in ("nodes", "concat")]
        if unknown or "nodes" not in entry:
            raise GenotypeError(f"{where}: expected keys 'nodes' and optionally 'concat', got {list(entry)!r}")
        nodes, concat = entry["nodes"], entry.get("concat")
    else:
        raise GenotypeError(f"{where}: expected an object with 'nodes' or a list of nodes, got {entry!r}")
    if not isinstance(nodes, (list, tuple)):
        raise GenotypeError(f"{where}: nodes must be a list of nodes, got {nodes!r}")
    nodes = tuple(_edges_from_json(node, f"{where} node {i}") for i, node in enumerate(nodes))
    if concat is None:
        concat = tuple(range(2, 2 + len(nodes)))
    elif not isinstance(concat, (list, tuple)):
        raise GenotypeError(f"{where} concat: expected a list of node indices, got {concat!r}")
    return CellGenotype(nodes=nodes, concat=tuple(concat))


def _stage_from_json(entry, where: str) -> StageGenotype:
    if not isinstance(entry, Mapping):
        raise GenotypeError(f"{where}: expected an object with 'cells' and 'concat', got {entry!r}")
    unknown = [k for k in entry if k not in ("cells", "concat")]
    if unknown or "cells" not in entry:
        raise GenotypeError(f"{where}: expected keys 'cells' and optionally 'concat', got {list(entry)!r}")
    cells = entry["cells"]
    if not isinstance(cells, (list, tuple)):
        raise GenotypeError(f"{where}: cells must be a list of cells, got {cells!r}")
    cells = tuple(_edges_from_json(cell, f"{where} cell {j}") for j, cell in enumerate(cells))
    concat = entry.get("concat")
    if concat is None:
        # The last two cells, as in the chain (BUILD_NOTES "Stage DAGs, the sliding window and β").
        concat = (len(cells), len(cells) + 1)
    elif not isinstance(concat, (list, tuple)):
        raise GenotypeError(f"{where} concat: expected two state indices, got {concat!r}")
    return StageGenotype(cells=cells, concat=tuple(concat))




# === The conventional stage ===


def chain_stage(n: int) -> StageGenotype:
    """The conventional DARTS stage as a DAG: cell j takes [skip j, skip j+1]; the output is the last
    two cells, states (n, n+1)."""
    if not is_int(n) or n < 1:
        raise GenotypeError(f"a chain stage needs a positive number of cells, got {n!r}")
    return StageGenotype(cells=tuple((("skip_connect", j), ("skip_connect", j + 1)) for j in range(n)),
                         concat=(n, n + 1))

