"""Safe import of the genotype strings of the PyTorch repositories (DARTS, pt.darts, H-DAS): parsed with
``ast``, never evaluated."""

from __future__ import annotations

import ast
import dataclasses
import re
import textwrap

from hdas_tf.errors import GenotypeError
from hdas_tf.space.genotypes import SHARED_KEYS, STAGE_SPECIFIC_KEYS, CellGenotype, Genotype, StageGenotype, is_int

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


def looks_like_pytorch_string(text: str) -> bool:
    """Whether ``text`` starts like a PyTorch genotype string (so a file that is neither JSON nor that gets
    the JSON error)."""
    return bool(_PYTORCH_LOOK.match(text))


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
            raise GenotypeError(f"unsupported constant {node.value!r} at {_pos(node)}; accepted: {_ACCEPTED}")
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and is_int(node.operand.value)
    ):
        return -node.operand.value  # so that a negative source gets the validator's message
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(elt) for elt in node.elts]
    if isinstance(node, ast.Call):
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func is None:
            raise GenotypeError(
                f"unsupported construct: call of a non-name ({type(node.func).__name__}) at {_pos(node)}; "
                f"accepted: {_ACCEPTED}"
            )
        if func == "range":
            return _range(node)
        if func in _PT_FIELDS:
            if not top:
                raise GenotypeError(f"unsupported construct: nested {func}(...) at {_pos(node)}")
            return _PtCall(func, _bind(node, func))
        raise GenotypeError(f"unsupported construct: call of {func!r} at {_pos(node)}; accepted: {_ACCEPTED}")
    raise GenotypeError(f"unsupported construct {type(node).__name__} at {_pos(node)}; accepted: {_ACCEPTED}")


def _range(node: ast.Call) -> list:
    if node.keywords or not 1 <= len(node.args) <= 3:
        raise GenotypeError(f"range(...) at {_pos(node)} must have 1 to 3 positional integer arguments")
    args = [_literal(a) for a in node.args]
    if not all(is_int(a) for a in args):
        raise GenotypeError(f"range(...) at {_pos(node)} must have integer arguments, got {args!r}")
    if args[-1] == 0 and len(args) == 3:
        raise GenotypeError(f"range(...) at {_pos(node)} has step 0")
    r = range(*args)
    if len(r) > _MAX_RANGE:
        raise GenotypeError(f"range(...) at {_pos(node)} has {len(r)} elements; a genotype index range is short")
    return list(r)


def _bind(node: ast.Call, kind: str) -> dict:
    fields = _PT_FIELDS[kind]
    if len(node.args) > len(fields):
        raise GenotypeError(
            f"{kind}(...) at {_pos(node)} has {len(node.args)} positional arguments; at most {len(fields)}"
        )
    bound = {}
    for field, arg in zip(fields, node.args):
        bound[field] = _literal(arg)
    for kw in node.keywords:
        if kw.arg is None:
            raise GenotypeError(f"unsupported construct: **-argument in {kind}(...) at {_pos(kw.value)}")
        if kw.arg not in fields:
            raise GenotypeError(f"{kind}(...) at {_pos(node)}: unknown field {kw.arg!r}; fields: {', '.join(fields)}")
        if kw.arg in bound:
            raise GenotypeError(f"{kind}(...) at {_pos(node)}: field {kw.arg!r} given twice")
        bound[kw.arg] = _literal(kw.value)
    for field in fields:
        if not field.endswith("_concat") and field not in bound:
            raise GenotypeError(f"{kind}(...) at {_pos(node)} is missing field {field!r}")
    return bound


def _is_edge(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)


def _pt_nodes(value, where: str) -> tuple:
    """Nodes from a PyTorch edge list: DARTS' flat list (2 edges per node, in node order) or the nested
    list of pt.darts / H-DAS (one list of edges per node)."""
    if not isinstance(value, list) or not value:
        raise GenotypeError(f"{where}: expected a non-empty list of (op, source) edges, got {value!r}")
    if all(_is_edge(x) for x in value):
        if len(value) % 2:
            raise GenotypeError(f"{where}: a flat edge list holds 2 edges per node; got an odd number ({len(value)})")
        return tuple((tuple(value[i]), tuple(value[i + 1])) for i in range(0, len(value), 2))
    if all(isinstance(x, list) and x and all(_is_edge(y) for y in x) for x in value):
        return tuple(tuple(tuple(y) for y in x) for x in value)
    raise GenotypeError(
        f"{where}: expected a flat list of (op, source) edges or a list of such lists (one per node), "
        f"got {value!r}"
    )


def _pt_concat(value, where: str, default: tuple) -> tuple:
    if value is None:
        return default
    if not isinstance(value, list):
        raise GenotypeError(f"{where}: expected a list or range of indices, got {value!r}")
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
        raise GenotypeError(f"expected a genotype string, got {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise GenotypeError(f"genotype string is {len(text)} characters long; refusing more than {_MAX_TEXT}")
    try:
        module = ast.parse(textwrap.dedent(text), mode="exec")  # dedent keeps reported positions exact
    except SyntaxError as e:
        raise GenotypeError(
            f"not a genotype string: syntax error at line {e.lineno}, column {e.offset}: {e.msg}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise GenotypeError(f"not a genotype string: {type(e).__name__}: {e}") from None
    if len(module.body) != 1:
        raise GenotypeError(
            f"expected a single genotype expression or `NAME = Genotype(...)`, found {len(module.body)} statements"
        )
    stmt = module.body[0]
    if isinstance(stmt, ast.Expr):
        target = None
    elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        target = stmt.targets[0].id
    else:
        raise GenotypeError(
            f"unsupported statement {type(stmt).__name__} at {_pos(stmt)}; expected a genotype expression "
            "or `NAME = Genotype(...)`"
        )
    try:
        value = _literal(stmt.value, top=True)
    except RecursionError:
        raise GenotypeError("genotype string is nested too deeply") from None
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
            raise GenotypeError(
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
        raise GenotypeError(
            f"expected Genotype(...), Genotype2(...), Genotype3(...) or a list of 16 edges, got {value!r}"
        )
    genotype.validate()
    return genotype

