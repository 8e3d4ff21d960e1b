"""Read a stage's observations out of the result JSON a repeat wrote.

Paths are relative to the repeat's basetemp. A ``json_path`` is dotted (each
segment a dict key); ``file::dotted.path`` names another file; a trailing
``.__len__`` counts the items of a list. Only finite numbers count: NaN,
infinities, strings, booleans and missing keys are problems, reported with
the file and the dotted path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from .stages import JsonRef
from .stages import Stage


LEN_SUFFIX = ".__len__"


@dataclass
class Harvest:
    metrics: dict[str, float | None] = field(default_factory=dict)
    sample_counts: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # True when a problem is a missing file or key (a config mistake when the
    # test passed), as opposed to a value of the wrong kind.
    missing: bool = False


def split_ref(ref: JsonRef) -> tuple[str | None, str]:
    """Resolve the ``file::path`` form into (file, dotted path)."""
    if "::" in ref.json_path:
        file, path = ref.json_path.split("::", 1)
        return file, path
    return ref.json_file, ref.json_path


class _Reader:
    """Loads each JSON file once per harvest."""

    def __init__(self, basetemp: Path) -> None:
        self.basetemp = basetemp
        self.cache: dict[str, Any] = {}

    def load(self, name: str) -> Any:
        if name not in self.cache:
            path = self.basetemp / name
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise _Missing(f"{name}: file missing under {self.basetemp}") from None
            except OSError as exc:
                raise _Bad(f"{name}: unreadable ({exc})") from None
            try:
                self.cache[name] = json.loads(text, parse_constant=_keep_constant)
            except ValueError as exc:
                raise _Bad(f"{name}: not valid JSON ({exc})") from None
        return self.cache[name]


class _Missing(Exception):
    pass


class _Bad(Exception):
    pass


def _keep_constant(name: str) -> float:
    # json accepts NaN/Infinity; keep them so they are reported, not dropped.
    return float(name)


def _follow(data: Any, path: str, where: str) -> Any:
    node = data
    walked: list[str] = []
    for segment in path.split("."):
        walked.append(segment)
        if not isinstance(node, dict) or segment not in node:
            raise _Missing(f"{where}: key {'.'.join(walked)!r} missing")
        node = node[segment]
    return node


def _value(reader: _Reader, ref: JsonRef, *, count: bool) -> float | int:
    file, path = split_ref(ref)
    if not file:
        raise _Bad(f"{path}: no json_file configured for this path")
    data = reader.load(file)
    where = f"{file}::{path}"
    length = path.endswith(LEN_SUFFIX)
    if length:
        path = path[: -len(LEN_SUFFIX)]
    node = _follow(data, path, where)
    if length:
        if not isinstance(node, (list, dict)):
            raise _Bad(f"{where}: expected a list to count, got {type(node).__name__}")
        return len(node)
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise _Bad(f"{where}: expected a number, got {node!r}")
    if not math.isfinite(node):
        raise _Bad(f"{where}: expected a finite number, got {node!r}")
    if count:
        if isinstance(node, float) and not node.is_integer():
            raise _Bad(f"{where}: expected a whole count, got {node!r}")
        return int(node)
    return float(node)


def _read(
    reader: _Reader, ref: JsonRef, label: str, out: Harvest, *, count: bool
) -> float | int | None:
    """One value, or None with the problem recorded under ``label``."""
    try:
        return _value(reader, ref, count=count)
    except _Missing as exc:
        out.problems.append(f"{label}: {exc}")
        out.missing = True
    except _Bad as exc:
        out.problems.append(f"{label}: {exc}")
    return None


def harvest(stage: Stage, basetemp: Path) -> Harvest:
    """Every metric and sample count of ``stage`` from one repeat's files."""
    reader = _Reader(basetemp)
    out = Harvest()
    for key, metric in stage.metrics.items():
        ref = metric.ref
        if ref is None:
            out.metrics[key] = None
            out.problems.append(f"{key}: no json_path configured (NEEDS_CONFIG)")
            out.missing = True
            continue
        value = _read(reader, ref, key, out, count=False)
        out.metrics[key] = None if value is None else float(value)
    if stage.observation_validity is not None:
        _check_validity(reader, stage.observation_validity, out)
    for name, ref in (stage.sample_counts or {}).items():
        count = _read(reader, ref, f"sample_counts.{name}", out, count=True)
        out.sample_counts[name] = None if count is None else int(count)
    return out


def _check_validity(reader: _Reader, ref: JsonRef, out: Harvest) -> None:
    """The benchmark's own verdict on its run: a JSON ``true`` or it is void."""
    file, path = split_ref(ref)
    where = f"{file}::{path}"
    try:
        if not file:
            raise _Bad(f"{path}: no json_file configured for this path")
        node = _follow(reader.load(file), path, where)
    except _Missing as exc:
        out.problems.append(f"observation_validity: {exc}")
        out.missing = True
        return
    except _Bad as exc:
        out.problems.append(f"observation_validity: {exc}")
        return
    if node is not True:
        out.problems.append(f"observation_validity: {where} is {node!r}, not true")


def completeness_problems(stage: Stage, result: Harvest) -> list[str]:
    """Why an observation cannot count, beyond extraction problems."""
    problems: list[str] = []
    counts = result.sample_counts
    if stage.sample_counts:
        total, ok = counts.get("total"), counts.get("ok")
        if total is not None and ok is not None and ok != total:
            problems.append(f"partial samples: ok={ok} of total={total}")
        if (
            stage.expected_samples is not None
            and total is not None
            and total != stage.expected_samples
        ):
            problems.append(
                f"sample scope: total={total}, expected_samples="
                f"{stage.expected_samples}"
            )
    return problems
