"""Find threshold literals in a module's AST by :class:`Location`.

Discovery, the logic hash, the report's current values and the rewriter all
look literals up the same way, through this module: by symbol, outer key and
inner key, never by line regex.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .stages import Key
from .stages import Location


Number = int | float


@dataclass(frozen=True)
class Literal:
    """A numeric literal node: ``1.5``, ``-3``, ``1e-3``, ``1_000``."""

    node: ast.expr  # ast.Constant, or ast.UnaryOp(USub|UAdd, Constant)
    value: Number

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


def number_of(node: ast.expr | None) -> Literal | None:
    """The node as a numeric literal, or None when it is anything else."""
    if node is None:
        return None
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Literal(node, value)
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = number_of(node.operand)
        if inner is None or not isinstance(node.operand, ast.Constant):
            return None
        value = -inner.value if isinstance(node.op, ast.USub) else inner.value
        return Literal(node, value)
    return None


def dict_key(node: ast.expr | None) -> Key | None:
    """An int or str dict key (``16``, ``-1``, ``"throughput_qps"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    lit = number_of(node)
    if lit is not None and lit.is_int:
        return int(lit.value)
    return None


def assigned_values(module: ast.Module) -> dict[str, ast.expr]:
    """Module-level ``NAME = value`` and ``NAME: T = value``; the last wins."""
    found: dict[str, ast.expr] = {}
    for stmt in module.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = stmt.value
        elif (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
        ):
            found[stmt.target.id] = stmt.value
    return found


def _entry(node: ast.expr, key: Key) -> ast.expr | None:
    if not isinstance(node, ast.Dict):
        return None
    hit: ast.expr | None = None
    for k, v in zip(node.keys, node.values, strict=True):
        if k is not None and dict_key(k) == key and type(dict_key(k)) is type(key):
            hit = v  # a repeated key: Python keeps the last one
    return hit


def find(module: ast.Module, loc: Location) -> Literal | None:
    """The literal ``loc`` points at, or None when the file no longer has it."""
    value: ast.expr | None = assigned_values(module).get(loc.symbol)
    if value is None:
        return None
    if loc.outer_key is not None:
        value = _entry(value, loc.outer_key)
        if value is None:
            return None
    if loc.inner_key is not None:
        value = _entry(value, loc.inner_key)
    return number_of(value)


def read_values(
    source: str, locations: list[Location]
) -> dict[Location, Number | None]:
    """Current values of several literals of one file's source."""
    module = ast.parse(source)
    out: dict[Location, Number | None] = {}
    for loc in locations:
        lit = find(module, loc)
        out[loc] = None if lit is None else lit.value
    return out
