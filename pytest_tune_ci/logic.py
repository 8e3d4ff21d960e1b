"""The logic hash: a test file's AST with its threshold literals blanked.

Rewriting a threshold changes the raw sha256 of a file but not its logic hash,
so an apply never makes stages.yaml stale, while any other change does.
Discovery, resume and apply all compute it here, from the same locations.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable

from . import literals
from .stages import Location
from .stages import Stage


def logic_hash(source: str, locations: Iterable[Location]) -> str:
    """sha256 of the AST dump with each located literal replaced by ``0``.

    A location the source no longer has is folded into the hash, so a file
    that lost a threshold never hashes like one that kept it.
    """
    module = ast.parse(source)
    blanked: set[int] = set()
    lost: list[str] = []
    for loc in sorted(
        set(locations), key=lambda x: (x.symbol, repr(x.outer_key), repr(x.inner_key))
    ):
        lit = literals.find(module, loc)
        if lit is None:
            lost.append(loc.ref)
        else:
            blanked.add(id(lit.node))

    class _Blank(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            if id(node) in blanked:
                return ast.Constant(value=0)
            result: ast.AST = super().visit(node)
            return result

    tree = _Blank().visit(module)
    digest = hashlib.sha256(ast.dump(tree, include_attributes=False).encode())
    for ref in lost:
        digest.update(f"\0missing:{ref}".encode())
    return digest.hexdigest()


def file_locations(stages: Iterable[Stage]) -> dict[str, list[Location]]:
    """Every recognised threshold location, per file that holds it.

    A file's logic hash blanks all of them: the metrics and the
    not-calibrated entries of every stage, so all stages of a file share it.
    """
    found: dict[str, list[Location]] = {}
    for stage in stages:
        for metric in stage.metrics.values():
            found.setdefault(metric.location.file, []).append(metric.location)
        for entry in stage.not_calibrated:
            found.setdefault(entry.location.file, []).append(entry.location)
        found.setdefault(stage.test, [])
    return found


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
