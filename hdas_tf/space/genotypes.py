"""Genotypes: discrete DARTS / H-DAS architectures as data — types, JSON format, validation, safe import of
the PyTorch repos' genotype strings, parsing architecture weights into genotypes, and the registry of
published genotypes (DESIGN §5 "Deriving genotypes", §6).

Index conventions (DESIGN §4, §6; all indices in this module and in its error messages are 0-based, as in
the JSON document):

- Cell level: source 0 = c_{k-2}, 1 = c_{k-1}, 2 + i = intermediate node i. Node i may read sources
  0..i+1. ``concat`` lists the node states whose channel concatenation is the cell output.
- Stage level: state 0 and 1 are the two 1×1 projections of the stage input, state t >= 2 is cell t-2 of
  the same stage. Cell j may read states 0..j+1 (with a sliding window m: only the last min(m, j+2)).
  ``concat`` holds the two state indices whose concatenation is the stage output.

The dataclasses do not validate themselves on construction (a parser may build a genotype over a custom
op set and check it with that set); every boundary does: ``from_dict``/``from_json``/``load``,
``from_pytorch_string``, ``to_dict``/``save``, the parsers and the registry call ``validate``. Every
problem is reported as a ValueError naming the offending entry, never a TypeError or KeyError.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import numbers
import os
import re
import tempfile
import textwrap
import types
from collections.abc import Mapping

import numpy as np

from hdas_tf.space.op_registry import CELL_OPS, STAGE_OPS

FORMAT = "hdas_tf.genotype/1"
SHARED_KEYS = ("normal", "reduce")
STAGE_SPECIFIC_KEYS = ("normal1", "reduce1", "normal2", "reduce2", "normal3")

Edge = tuple[str, int]  # (op_name, source_index)

# A shared-cell genotype serves every stage-specific group from its one normal / one reduce cell.
_SHARED_GROUP = {
    "normal": "normal",
    "reduce": "reduce",
    "normal1": "normal",
    "normal2": "normal",
    "normal3": "normal",
    "reduce1": "reduce",
    "reduce2": "reduce",
}
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
        return (
            f"Genotype(cells={cells!r}, stages={self.stages!r}, "
            f"stage_lengths={self.stage_lengths!r}, name={self.name!r})"
        )

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
        raise ValueError(_cell_keys_message(self.cells))

    def cell_for(self, group: str) -> CellGenotype:
        """The cell of a cell group (DESIGN §4: normal1, reduce1, normal2, reduce2, normal3).

        A shared genotype serves normal1/2/3 with 'normal' and reduce1/2 with 'reduce'. A stage-specific
        genotype has no single 'normal'/'reduce' cell, so asking for one is an error.
        """
        if self.cells is None:
            raise ValueError(
                f"genotype {self.name!r} has no cells (a stage-only genotype); combine it with a cell "
                "genotype first, e.g. cells.with_stages(this)"
            )
        if group not in _SHARED_GROUP:
            raise ValueError(
                f"unknown cell group {group!r}; known groups: {', '.join(STAGE_SPECIFIC_KEYS + SHARED_KEYS)}"
            )
        sharing = self.cell_sharing
        if sharing == "shared":
            return self.cells[_SHARED_GROUP[group]]
        if group in SHARED_KEYS:
            raise ValueError(
                f"genotype {self.name!r} has stage-specific cells ({', '.join(STAGE_SPECIFIC_KEYS)}); "
                f"ask for one of those, not {group!r}"
            )
        return self.cells[group]

    def stage_for(self, s: int) -> StageGenotype:
        """The DAG of stage s (0..2). A shared DAG (one entry) serves all three stages.

        Without stage DAGs but with ``stage_lengths`` (a cell-distribution result) the stage is the
        conventional chain of that length; without both there is no stage level to return.
        """
        if not _is_int(s) or not 0 <= s <= 2:
            raise ValueError(f"stage index must be 0, 1 or 2, got {s!r}")
        if self.stages is None:
            if self.stage_lengths is not None:
                return chain_stage(self.stage_lengths[s])
            raise ValueError(
                f"genotype {self.name!r} has no stage DAGs (chain stage level) and no stage_lengths; "
                "use chain_stage(n) for a chain stage of n cells"
            )
        return self.stages[s if len(self.stages) == 3 else 0]

    def with_stages(self, other: Genotype) -> Genotype:
        """The cells of this genotype with the stage DAGs and stage lengths of ``other``.

        This is how a stage-only genotype (H^s-DAS DAGs) is put on top of searched or published cells.
        The name joins both names with '+'.
        """
        if not isinstance(other, Genotype):
            raise ValueError(f"with_stages expects a Genotype, got {type(other).__name__}")
        names = [n for n in (self.name, other.name) if n]
        return Genotype(
            cells=None if self.cells is None else dict(self.cells),
            stages=other.stages,
            stage_lengths=other.stage_lengths,
            name="+".join(names) if names else None,
        )

    # --- Validation ---

    def validate(self, window: int | None = None) -> None:
        """Raise ValueError on the first problem (DESIGN §6), naming the offending entry.

        Args:
            window: int. The stage level's sliding window m (DESIGN §4): when given, every source of
                stage cell j must be one of the last min(m, j+2) states, i.e. >= (j+2) - m.
        """
        if window is not None and (not _is_int(window) or window < 1):
            raise ValueError(f"window must be a positive integer, got {window!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        if self.cells is None and self.stages is None:
            raise ValueError("genotype is empty: it has neither cells nor stages")
        if self.cells is not None:
            if not isinstance(self.cells, Mapping):
                raise ValueError(f"cells must be a mapping from cell key to cell, got {type(self.cells).__name__}")
            keys = set(self.cells)
            if keys != set(SHARED_KEYS) and keys != set(STAGE_SPECIFIC_KEYS):
                raise ValueError(_cell_keys_message(self.cells))
            for key in _ordered_keys(self.cells):
                validate_cell(self.cells[key], f"cell {key!r}")
        if self.stages is not None:
            if not isinstance(self.stages, tuple):
                raise ValueError(f"stages must be a list of stage DAGs, got {type(self.stages).__name__}")
            if len(self.stages) not in (1, 3):
                raise ValueError(
                    f"stages: expected 3 stage DAGs (stage-specific) or 1 (shared by all stages), "
                    f"got {len(self.stages)}"
                )
            for s, stage in enumerate(self.stages):
                validate_stage(stage, f"stage {s}")
                if window is not None:
                    _check_window(stage, f"stage {s}", window)
        if self.stage_lengths is not None:
            lengths = self.stage_lengths
            if not (
                isinstance(lengths, tuple) and len(lengths) == 3 and all(_is_int(n) and n > 0 for n in lengths)
            ):
                raise ValueError(f"stage_lengths: expected 3 positive integers (cells per stage), got {lengths!r}")
            if self.stages is not None:
                for s in range(3):
                    n_cells = len(self.stage_for(s).cells)
                    if n_cells != lengths[s]:
                        raise ValueError(
                            f"stage {s}: the DAG has {n_cells} cells but stage_lengths[{s}] is {lengths[s]}"
                        )

    # --- Serialisation ---

    def to_dict(self) -> dict:
        """The JSON-ready document of DESIGN §6; fields that are None are omitted."""
        self.validate()
        doc = {"format": FORMAT}
        if self.name is not None:
            doc["name"] = self.name
        if self.cells is not None:
            doc["cells"] = {
                key: {
                    "nodes": [_edges_to_json(node) for node in self.cells[key].nodes],
                    "concat": [int(c) for c in self.cells[key].concat],
                }
                for key in _ordered_keys(self.cells)
            }
        if self.stages is not None:
            doc["stages"] = [
                {"cells": [_edges_to_json(cell) for cell in stage.cells], "concat": [int(c) for c in stage.concat]}
                for stage in self.stages
            ]
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
            raise ValueError(f"a genotype document must be a JSON object, got {type(d).__name__}")
        if "format" in d:
            if d["format"] != FORMAT:
                raise ValueError(f"unsupported genotype format {d['format']!r}; this version reads {FORMAT!r}")
        elif "cells" not in d and "stages" not in d:
            raise ValueError(
                f"not a genotype document: no 'format' key (expected {FORMAT!r}) and no 'cells' or 'stages'"
            )
        unknown = [k for k in d if k not in _DOC_KEYS]
        if unknown:
            raise ValueError(f"unknown genotype document keys {unknown!r}; known keys: {', '.join(_DOC_KEYS)}")
        cells = d.get("cells")
        if cells is not None:
            if not isinstance(cells, Mapping):
                raise ValueError(f"cells must be an object mapping cell key to cell, got {type(cells).__name__}")
            cells = {key: _cell_from_json(entry, f"cell {key!r}") for key, entry in cells.items()}
        stages = d.get("stages")
        if stages is not None:
            if not isinstance(stages, (list, tuple)):
                raise ValueError(f"stages must be a list of stage DAGs, got {type(stages).__name__}")
            stages = tuple(_stage_from_json(entry, f"stage {s}") for s, entry in enumerate(stages))
        lengths = d.get("stage_lengths")
        if lengths is not None and not isinstance(lengths, (list, tuple)):
            raise ValueError(f"stage_lengths: expected 3 positive integers (cells per stage), got {lengths!r}")
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
            raise ValueError(f"not a genotype JSON document: {e}") from None
        return cls.from_dict(doc)

    def save(self, path) -> None:
        """Write the JSON document atomically: a temp file in the same directory, then os.replace.

        A reader (or a search resumed after a crash) never sees a half-written genotype file.
        """
        path = os.fspath(path)
        text = self.to_json() + "\n"
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; a genotype file is an ordinary shared artefact
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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
            raise ValueError(f"genotype file {path!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read genotype file {path!r}: {e}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            if not _PYTORCH_LOOK.match(text):
                raise ValueError(
                    f"{path}: neither a genotype JSON document ({e}) nor a PyTorch genotype string"
                ) from None
            try:
                return from_pytorch_string(text)
            except ValueError as e2:
                raise ValueError(f"{path}: {e2}") from None
        try:
            return cls.from_dict(doc)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


# === Validation ===


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _known_ops(op_names) -> str:
    return ", ".join(o for o in op_names if o != "none")


def _ordered_keys(cells) -> list:
    canonical = STAGE_SPECIFIC_KEYS if set(cells) == set(STAGE_SPECIFIC_KEYS) else SHARED_KEYS
    return [k for k in canonical if k in cells] + [k for k in cells if k not in canonical]


def _cell_keys_message(cells) -> str:
    return (
        f"cells: keys {sorted(map(repr, cells))} are neither exactly {list(SHARED_KEYS)} (shared cells) "
        f"nor exactly {list(STAGE_SPECIFIC_KEYS)} (stage-specific cells)"
    )


def _check_edges(edges, where: str, op_names, max_src: int, what: str) -> None:
    """The rules shared by cell nodes and stage cells (DESIGN §6): known non-'none' ops, integer sources
    in 0..max_src, at most one edge per source."""
    if not isinstance(edges, (tuple, list)) or not edges:
        raise ValueError(f"{where} has no edges; every {what} needs at least one (op, source) edge, got {edges!r}")
    seen = {}
    for e, edge in enumerate(edges):
        if not isinstance(edge, (tuple, list)) or len(edge) != 2:
            raise ValueError(f"{where} edge {e}: expected an (op, source) pair, got {edge!r}")
        op, src = edge
        if not isinstance(op, str):
            raise ValueError(f"{where} edge {e}: op must be a string, got {op!r}")
        if op == "none":
            # 'none' only exists in the search space: a derived edge is either there or not.
            raise ValueError(f"{where} edge {e}: op 'none' is not allowed in a derived genotype")
        if op_names is not None and op not in op_names:
            raise ValueError(f"{where} edge {e}: unknown op {op!r}; known ops: {_known_ops(op_names)}")
        if not _is_int(src):
            raise ValueError(f"{where} edge {e}: source must be an integer, got {src!r}")
        if not 0 <= src <= max_src:
            raise ValueError(f"{where} edge {e}: source {src} out of range; valid sources are 0..{max_src}")
        if src in seen:
            raise ValueError(
                f"{where} edge {e}: duplicate source {src} (edge {seen[src]} already reads it); "
                f"a source feeds a {what} at most once"
            )
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
        raise ValueError(f"{where}: expected a CellGenotype, got {type(cell).__name__}")
    nodes = cell.nodes
    if not isinstance(nodes, tuple) or not nodes:
        raise ValueError(f"{where}: nodes must be a non-empty list of nodes, got {nodes!r}")
    for i, node in enumerate(nodes):
        _check_edges(node, f"{where} node {i}", op_names, max_src=i + inputs - 1, what="node")
    _check_cell_concat(cell.concat, where, low=inputs, high=inputs + len(nodes) - 1)


def _check_cell_concat(concat, where: str, low: int, high: int) -> None:
    # Only intermediate nodes: an input state of a reduction cell has the wrong spatial size to concat.
    if not isinstance(concat, tuple) or not concat:
        raise ValueError(f"{where} concat: expected a non-empty list of node indices, got {concat!r}")
    for c in concat:
        if not _is_int(c) or not low <= c <= high:
            raise ValueError(
                f"{where} concat: index {c!r} out of range; valid indices are {low}..{high} (the intermediate nodes)"
            )
    if len(set(concat)) != len(concat):
        raise ValueError(f"{where} concat: duplicate index in {list(concat)}")


def validate_stage(stage: StageGenotype, where: str, op_names=STAGE_OPS) -> None:
    """Raise ValueError if ``stage`` is not a valid stage DAG; messages start with ``where``.

    ``op_names=None`` checks the structure only (any op name).
    """
    if not isinstance(stage, StageGenotype):
        raise ValueError(f"{where}: expected a StageGenotype, got {type(stage).__name__}")
    cells = stage.cells
    if not isinstance(cells, tuple) or not cells:
        raise ValueError(f"{where}: cells must be a non-empty list of cells, got {cells!r}")
    for j, cell in enumerate(cells):
        _check_edges(cell, f"{where} cell {j}", op_names, max_src=j + 1, what="cell")
    concat, high = stage.concat, len(cells) + 1
    if not (isinstance(concat, tuple) and len(concat) == 2 and all(_is_int(c) for c in concat)):
        raise ValueError(f"{where} concat: expected two state indices, got {concat!r}")
    for c in concat:
        if not 0 <= c <= high:
            raise ValueError(f"{where} concat: state index {c} out of range; valid states are 0..{high}")
    if concat[0] == concat[1]:
        raise ValueError(f"{where} concat: the two state indices must differ, got {list(concat)}")


def _check_window(stage: StageGenotype, where: str, window: int) -> None:
    # DESIGN §4: cell j's candidate sources are the last min(m, j+2) states.
    for j, cell in enumerate(stage.cells):
        low = max(0, j + 2 - window)
        for e, (_, src) in enumerate(cell):
            if src < low:
                raise ValueError(
                    f"{where} cell {j} edge {e}: source {src} is outside the sliding window of {window} "
                    f"states; valid sources are {low}..{j + 1}"
                )


# === JSON helpers ===


def _edges_to_json(edges) -> list:
    return [[op, int(src)] for op, src in edges]


def _edges_from_json(edges, where: str) -> tuple:
    if not isinstance(edges, (list, tuple)):
        raise ValueError(f"{where}: expected a list of [op, source] edges, got {edges!r}")
    out = []
    for e, edge in enumerate(edges):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise ValueError(f"{where} edge {e}: expected [op, source], got {edge!r}")
        out.append(tuple(edge))
    return tuple(out)


def _cell_from_json(entry, where: str) -> CellGenotype:
    if isinstance(entry, (list, tuple)):
        nodes, concat = entry, None
    elif isinstance(entry, Mapping):
        unknown = [k for k in entry if k not in ("nodes", "concat")]
        if unknown or "nodes" not in entry:
            raise ValueError(f"{where}: expected keys 'nodes' and optionally 'concat', got {list(entry)!r}")
        nodes, concat = entry["nodes"], entry.get("concat")
    else:
        raise ValueError(f"{where}: expected an object with 'nodes' or a list of nodes, got {entry!r}")
    if not isinstance(nodes, (list, tuple)):
        raise ValueError(f"{where}: nodes must be a list of nodes, got {nodes!r}")
    nodes = tuple(_edges_from_json(node, f"{where} node {i}") for i, node in enumerate(nodes))
    if concat is None:
        concat = tuple(range(2, 2 + len(nodes)))
    elif not isinstance(concat, (list, tuple)):
        raise ValueError(f"{where} concat: expected a list of node indices, got {concat!r}")
    return CellGenotype(nodes=nodes, concat=tuple(concat))


def _stage_from_json(entry, where: str) -> StageGenotype:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object with 'cells' and 'concat', got {entry!r}")
    unknown = [k for k in entry if k not in ("cells", "concat")]
    if unknown or "cells" not in entry:
        raise ValueError(f"{where}: expected keys 'cells' and optionally 'concat', got {list(entry)!r}")
    cells = entry["cells"]
    if not isinstance(cells, (list, tuple)):
        raise ValueError(f"{where}: cells must be a list of cells, got {cells!r}")
    cells = tuple(_edges_from_json(cell, f"{where} cell {j}") for j, cell in enumerate(cells))
    concat = entry.get("concat")
    if concat is None:
        concat = (len(cells), len(cells) + 1)  # the last two cells, as in the chain (DESIGN §4)
    elif not isinstance(concat, (list, tuple)):
        raise ValueError(f"{where} concat: expected two state indices, got {concat!r}")
    return StageGenotype(cells=cells, concat=tuple(concat))


# === Safe import of the PyTorch repos' genotype strings (DESIGN §6: never eval) ===

# Field order of the namedtuples in the DARTS and H-DAS repositories; positional arguments bind in this order.
_PT_FIELDS = {
    "Genotype": ("normal", "normal_concat", "reduce", "reduce_concat"),
    "Genotype3": (
        "normal1", "normal1_concat", "reduce1", "reduce1_concat", "normal2",
        "normal2_concat", "reduce2", "reduce2_concat", "normal3", "normal3_concat",
    ),
    "Genotype2": ("DAG1", "DAG1_concat", "DAG2", "DAG2_concat", "DAG3", "DAG3_concat"),
}
_ACCEPTED = "Genotype/Genotype2/Genotype3(...), range(...), lists, tuples, strings and integers"
_MAX_TEXT = 1_000_000
_MAX_RANGE = 4096  # a range(...) in a genotype spans a few indices; refuse to materialise huge ones
_PYTORCH_LOOK = re.compile(r"\s*(?:[A-Za-z_]\w*\s*=\s*)?(?:Genotype[23]?\s*\(|[\[(])")


@dataclasses.dataclass
class _PtCall:
    """A parsed top-level Genotype*(...) call: its name and the fields bound to their literal values."""

    kind: str
    fields: dict


def _pos(node) -> str:
    return f"line {node.lineno}, column {node.col_offset + 1}"


def _literal(node, top: bool = False):
    """The value of an AST node built only from accepted constructs; anything else is a ValueError."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (str, int)):
            raise ValueError(f"unsupported constant {node.value!r} at {_pos(node)}; accepted: {_ACCEPTED}")
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and _is_int(node.operand.value)
    ):
        return -node.operand.value  # so that a negative source gets the validator's message
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(elt) for elt in node.elts]
    if isinstance(node, ast.Call):
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func is None:
            raise ValueError(
                f"unsupported construct: call of a non-name ({type(node.func).__name__}) at {_pos(node)}; "
                f"accepted: {_ACCEPTED}"
            )
        if func == "range":
            return _range(node)
        if func in _PT_FIELDS:
            if not top:
                raise ValueError(f"unsupported construct: nested {func}(...) at {_pos(node)}")
            return _PtCall(func, _bind(node, func))
        raise ValueError(f"unsupported construct: call of {func!r} at {_pos(node)}; accepted: {_ACCEPTED}")
    raise ValueError(f"unsupported construct {type(node).__name__} at {_pos(node)}; accepted: {_ACCEPTED}")


def _range(node: ast.Call) -> list:
    if node.keywords or not 1 <= len(node.args) <= 3:
        raise ValueError(f"range(...) at {_pos(node)} must have 1 to 3 positional integer arguments")
    args = [_literal(a) for a in node.args]
    if not all(_is_int(a) for a in args):
        raise ValueError(f"range(...) at {_pos(node)} must have integer arguments, got {args!r}")
    if args[-1] == 0 and len(args) == 3:
        raise ValueError(f"range(...) at {_pos(node)} has step 0")
    r = range(*args)
    if len(r) > _MAX_RANGE:
        raise ValueError(f"range(...) at {_pos(node)} has {len(r)} elements; a genotype index range is short")
    return list(r)


def _bind(node: ast.Call, kind: str) -> dict:
    fields = _PT_FIELDS[kind]
    if len(node.args) > len(fields):
        raise ValueError(
            f"{kind}(...) at {_pos(node)} has {len(node.args)} positional arguments; at most {len(fields)}"
        )
    bound = {}
    for field, arg in zip(fields, node.args):
        bound[field] = _literal(arg)
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"unsupported construct: **-argument in {kind}(...) at {_pos(kw.value)}")
        if kw.arg not in fields:
            raise ValueError(f"{kind}(...) at {_pos(node)}: unknown field {kw.arg!r}; fields: {', '.join(fields)}")
        if kw.arg in bound:
            raise ValueError(f"{kind}(...) at {_pos(node)}: field {kw.arg!r} given twice")
        bound[kw.arg] = _literal(kw.value)
    for field in fields:
        if not field.endswith("_concat") and field not in bound:
            raise ValueError(f"{kind}(...) at {_pos(node)} is missing field {field!r}")
    return bound


def _is_edge(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)


def _pt_nodes(value, where: str) -> tuple:
    """Nodes from a PyTorch edge list: DARTS' flat list (2 edges per node, in node order) or the nested
    list of pt.darts / H-DAS (one list of edges per node)."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of (op, source) edges, got {value!r}")
    if all(_is_edge(x) for x in value):
        if len(value) % 2:
            raise ValueError(f"{where}: a flat edge list holds 2 edges per node; got an odd number ({len(value)})")
        return tuple((tuple(value[i]), tuple(value[i + 1])) for i in range(0, len(value), 2))
    if all(isinstance(x, list) and x and all(_is_edge(y) for y in x) for x in value):
        return tuple(tuple(tuple(y) for y in x) for x in value)
    raise ValueError(
        f"{where}: expected a flat list of (op, source) edges or a list of such lists (one per node), "
        f"got {value!r}"
    )


def _pt_concat(value, where: str, default: tuple) -> tuple:
    if value is None:
        return default
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list or range of indices, got {value!r}")
    return tuple(value)


def from_pytorch_string(text: str, name: str | None = None) -> Genotype:
    """Import a genotype written as in the PyTorch repositories, without executing anything.

    The text is parsed with ``ast`` and only these constructs are accepted: ``Genotype(...)``,
    ``Genotype2(...)``, ``Genotype3(...)`` calls at the top level (keyword or positional arguments in the
    namedtuple's field order), ``range(...)`` with integer arguments, lists, tuples, strings and integers.
    One leading ``NAME = `` assignment is allowed; NAME becomes the genotype's name unless ``name`` is given.

    - ``Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)``: shared cells.
    - ``Genotype3(normal1=..., reduce1=..., normal2=..., reduce2=..., normal3=..., *_concat=...)``:
      stage-specific cells.
    - ``Genotype2(DAG1=..., DAG1_concat=range(6, 8), DAG2=..., DAG3=..., ...)``: the three H^s-DAS stage
      DAGs (a stage-only genotype); concat holds two state indices.
    - A bare list of 16 ``(op, source)`` pairs (the flat "quark0" style): the normal cell's 8 edges, then
      the reduce cell's 8. Any other bare list is rejected, since it cannot be told apart reliably.

    Edge lists may be flat (DARTS: 2 edges per node/cell, in order) or nested (pt.darts / H-DAS: one list
    per node/cell). A missing ``*_concat`` defaults to all nodes (cells) or the last two cells (stages).
    Anything else — attribute access, other calls, names, lambdas, several statements — raises ValueError
    naming the construct and its position.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a genotype string, got {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise ValueError(f"genotype string is {len(text)} characters long; refusing more than {_MAX_TEXT}")
    try:
        module = ast.parse(textwrap.dedent(text), mode="exec")  # dedent keeps reported positions exact
    except SyntaxError as e:
        raise ValueError(
            f"not a genotype string: syntax error at line {e.lineno}, column {e.offset}: {e.msg}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"not a genotype string: {type(e).__name__}: {e}") from None
    if len(module.body) != 1:
        raise ValueError(
            f"expected a single genotype expression or `NAME = Genotype(...)`, found {len(module.body)} statements"
        )
    stmt = module.body[0]
    if isinstance(stmt, ast.Expr):
        target = None
    elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        target = stmt.targets[0].id
    else:
        raise ValueError(
            f"unsupported statement {type(stmt).__name__} at {_pos(stmt)}; expected a genotype expression "
            "or `NAME = Genotype(...)`"
        )
    try:
        value = _literal(stmt.value, top=True)
    except RecursionError:
        raise ValueError("genotype string is nested too deeply") from None
    name = name if name is not None else target

    if isinstance(value, _PtCall):
        f = value.fields
        if value.kind == "Genotype2":
            stages = []
            for s in range(1, 4):
                cells = _pt_nodes(f[f"DAG{s}"], f"DAG{s}")
                concat = _pt_concat(f.get(f"DAG{s}_concat"), f"DAG{s}_concat", (len(cells), len(cells) + 1))
                stages.append(StageGenotype(cells=cells, concat=concat))
            genotype = Genotype(cells=None, stages=tuple(stages), name=name)
        else:
            keys = SHARED_KEYS if value.kind == "Genotype" else STAGE_SPECIFIC_KEYS
            cells = {}
            for key in keys:
                nodes = _pt_nodes(f[key], key)
                concat = _pt_concat(f.get(f"{key}_concat"), f"{key}_concat", tuple(range(2, 2 + len(nodes))))
                cells[key] = CellGenotype(nodes=nodes, concat=concat)
            genotype = Genotype(cells=cells, name=name)
    elif isinstance(value, list):
        if len(value) != 16 or not all(_is_edge(x) for x in value):
            raise ValueError(
                "a bare list must hold 16 (op, source) pairs: the normal cell's 8 edges, then the reduce "
                f"cell's 8; got {len(value)} entries"
            )
        genotype = Genotype(
            cells={
                "normal": CellGenotype(_pt_nodes(value[:8], "normal")),
                "reduce": CellGenotype(_pt_nodes(value[8:], "reduce")),
            },
            name=name,
        )
    else:
        raise ValueError(
            f"expected Genotype(...), Genotype2(...), Genotype3(...) or a list of 16 edges, got {value!r}"
        )
    genotype.validate()
    return genotype


# === Parsing architecture weights (DESIGN §5 "Deriving genotypes") ===


def _check_parse_args(op_names, k, ranking) -> None:
    if not isinstance(op_names, (list, tuple)) or not all(isinstance(o, str) for o in op_names):
        raise ValueError(f"op_names must be a sequence of op names, got {op_names!r}")
    if len(set(op_names)) != len(op_names):
        raise ValueError(f"op_names has duplicates: {list(op_names)}")
    if all(o == "none" for o in op_names):
        raise ValueError(f"op_names has no op other than 'none': {list(op_names)}")
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if ranking not in ("softmax", "logit"):
        raise ValueError(f"ranking must be 'softmax' or 'logit', got {ranking!r}")


def alpha_matrix(alphas, shape: tuple, where: str) -> np.ndarray:
    """``alphas`` as a float64 array of ``shape``, finite; errors name ``where``."""
    try:
        a = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a numeric array ({e})") from None
    if a.shape != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: contains non-finite values")
    return a


def _top_edges(a: np.ndarray, sources, op_names, k: int, ranking: str) -> tuple:
    """The top-k rows of α (one row per candidate edge) by their strongest non-'none' op.

    softmax: the op's probability under softmax over ALL ops of the edge, 'none' included (DARTS);
    logit: the raw α (the H-DAS code's ranking). Ties go to the lower source. Each kept edge takes the
    argmax non-'none' op, which is the same under both rankings (softmax is monotonic).
    """
    keep = np.array([o for o, name in enumerate(op_names) if name != "none"])
    raw = a[:, keep]
    best = keep[np.argmax(raw, axis=1)]
    if ranking == "softmax":
        z = np.exp(a - a.max(axis=1, keepdims=True))
        score = (z / z.sum(axis=1, keepdims=True))[:, keep].max(axis=1)
    else:
        score = raw.max(axis=1)
    order = sorted(range(len(sources)), key=lambda r: (-score[r], r))[: min(k, len(sources))]
    return tuple((op_names[best[r]], int(sources[r])) for r in order)


def parse_cell_alphas(
    alphas, op_names=CELL_OPS, steps: int = 4, k: int = 2, ranking: str = "softmax", concat=None, op_mask=None
) -> CellGenotype:
    """Derive a discrete cell from the α of one cell (DESIGN §5).

    Args:
        alphas: array [num_edges, len(op_names)], num_edges = Σ_{i<steps} (i+2) (14 for 4 steps); rows go
            node by node, and within node i by source 0..i+1.
        op_names: sequence of str. The ops of α's last axis, in order: ``CELL_OPS`` or a subset (e.g. a
            StacNAS cluster set); 'none' may be absent. Defaults to ``CELL_OPS``.
        steps: int. Intermediate nodes. Defaults to 4.
        k: int. Edges kept per node. Defaults to 2.
        ranking: str. "softmax" (DARTS) or "logit" (raw α, as the H-DAS code). Defaults to "softmax".
        concat: sequence of int. Defaults to all nodes, (2, ..., steps+1).
        op_mask: optional bool array of α's shape: the ops each edge may use (StacNAS stage 2,
            ``SearchSpace.op_mask``). The others are left out of the softmax and of the choice, as the
            supernet left them out. Defaults to every op.

    Returns:
        CellGenotype. Within a node the edges are ordered by descending score (ties: lower source first),
        the order in which the DARTS code lists them.
    """
    _check_parse_args(op_names, k, ranking)
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    n_edges = sum(i + 2 for i in range(steps))
    a = alpha_matrix(alphas, (n_edges, len(op_names)), "cell alphas")
    if op_mask is not None:
        mask = np.asarray(op_mask, dtype=bool)
        if mask.shape != a.shape:
            raise ValueError(f"op_mask: expected shape {a.shape}, got {mask.shape}")
        searched = mask[:, [o for o, name in enumerate(op_names) if name != "none"]].any(axis=1)
        if not searched.all():
            raise ValueError(f"op_mask: edges {np.flatnonzero(~searched).tolist()} allow no op other than 'none'")
        a = np.where(mask, a, -np.inf)  # exp(-inf) = 0: out of the softmax; never the argmax
    nodes, start = [], 0
    for i in range(steps):
        n_in = i + 2
        nodes.append(_top_edges(a[start : start + n_in], range(n_in), op_names, k, ranking))
        start += n_in
    concat = tuple(range(2, steps + 2)) if concat is None else concat
    cell = CellGenotype(nodes=tuple(nodes), concat=concat)
    validate_cell(cell, "parsed cell", op_names=op_names)
    return cell


def parse_stage_alphas(
    alphas_per_cell, window: int, op_names=STAGE_OPS, k: int = 2, ranking: str = "softmax", concat=None
) -> tuple[StageGenotype, list[int]]:
    """Derive a stage DAG from the stage-edge α of one stage (DESIGN §5).

    Args:
        alphas_per_cell: list with one array per cell j (0-based), shape [min(window, j+2), len(op_names)].
            Row r is window position r: state (j+2) - min(window, j+2) + r, i.e. the last min(window, j+2)
            states, oldest first (DESIGN §4).
        window: int. The sliding window m.
        op_names: sequence of str. Defaults to ``STAGE_OPS``.
        k: int. Edges kept per cell (at most the number of rows). Defaults to 2.
        ranking: str. "softmax" or "logit", as in ``parse_cell_alphas``.
        concat: two state indices for the stage output, e.g. the argmax-β pair. Defaults to the last two
            cells, (n, n+1).

    Returns:
        (StageGenotype with STATE indices as sources, not window positions; its dead cells).
    """
    _check_parse_args(op_names, k, ranking)
    if not _is_int(window) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if not isinstance(alphas_per_cell, (list, tuple)) or not alphas_per_cell:
        raise ValueError("alphas_per_cell must be a non-empty list with one α array per cell")
    cells = []
    for j, alphas in enumerate(alphas_per_cell):
        rows = min(window, j + 2)
        a = alpha_matrix(alphas, (rows, len(op_names)), f"stage alphas cell {j}")
        first = j + 2 - rows  # the oldest state in cell j's window
        cells.append(_top_edges(a, range(first, j + 2), op_names, k, ranking))
    n = len(cells)
    concat = (n, n + 1) if concat is None else concat
    stage = StageGenotype(cells=tuple(cells), concat=concat)
    validate_stage(stage, "parsed stage", op_names=op_names)
    return stage, dead_cells(stage)


def dead_cells(stage: StageGenotype) -> list[int]:
    """0-based indices of the cells with no path to the stage output (not built in evaluation networks,
    DESIGN §4): walk back from the two concat states; cells never reached are dead, including every cell
    after the chosen concat pair."""
    validate_stage(stage, "stage", op_names=None)
    reached, todo = set(), list(stage.concat)
    while todo:
        t = todo.pop()
        if t < 2 or t - 2 in reached:
            continue  # a stage input, or a cell already walked
        reached.add(t - 2)
        todo.extend(src for _, src in stage.cells[t - 2])
    return [j for j in range(len(stage.cells)) if j not in reached]


def chain_stage(n: int) -> StageGenotype:
    """The conventional DARTS stage as a DAG: cell j takes [skip j, skip j+1]; the output is the last
    two cells, states (n, n+1)."""
    if not _is_int(n) or n < 1:
        raise ValueError(f"a chain stage needs a positive number of cells, got {n!r}")
    return StageGenotype(
        cells=tuple((("skip_connect", j), ("skip_connect", j + 1)) for j in range(n)), concat=(n, n + 1)
    )


# === Registry of published genotypes (data from shared/GENOTYPES.md) ===

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
        raise ValueError(f"expected a registry name or a genotype file path, got {spec!r}")
    spec = os.fspath(spec)
    by_lower = {name.lower(): genotype for name, genotype in REGISTRY.items()}
    if spec.lower() in by_lower:
        return by_lower[spec.lower()]
    if os.path.isfile(spec):
        return Genotype.load(spec)
    if os.path.exists(spec):
        raise ValueError(f"genotype path {spec!r} exists but is not a file")
    raise ValueError(
        f"unknown genotype {spec!r}: not a registry name (known: {', '.join(REGISTRY)}) "
        f"and the file {spec!r} does not exist"
    )
