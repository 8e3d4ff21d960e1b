"""Stage records: what stages.yaml holds, and selecting stages by token.

A *stage* is one (test file, variant, metric group) combination: the unit the
report has a section for. Its metrics say which threshold literal in which file
each value calibrates, and where the value is read from the result JSON.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Literal
from typing import NoReturn

import yaml

from .errors import ConfigError
from .errors import TuneError
from .errors import closest


Worst = Literal["min", "max"]
Key = int | str


@dataclass(frozen=True)
class Location:
    """Where one threshold literal lives in a Python file.

    ``outer_key`` is the outer key of a nested dict (the concurrency level of
    ``_X_P95 = {16: {"throughput_qps": 1.3}}``), ``inner_key`` its inner key.
    A bare constant has neither.
    """

    file: str  # path relative to the rootdir, POSIX separators
    symbol: str
    outer_key: Key | None = None
    inner_key: str | None = None
    line: int = 0

    @property
    def source(self) -> str:
        """The legacy ``source`` string: ``NAME`` or ``NAME['key']``."""
        if self.inner_key is None:
            return self.symbol
        return f"{self.symbol}[{self.inner_key!r}]"

    @property
    def ref(self) -> str:
        """Full reference with the outer key: ``NAME[16]['key']``."""
        text = self.symbol
        if self.outer_key is not None:
            text += f"[{self.outer_key!r}]"
        if self.inner_key is not None:
            text += f"[{self.inner_key!r}]"
        return text


@dataclass(frozen=True)
class JsonRef:
    """A value in a result JSON: ``json_file`` relative to the basetemp.

    ``json_path`` is dotted; a trailing ``.__len__`` counts a list's items.
    """

    json_file: str | None
    json_path: str


@dataclass(frozen=True)
class Display:
    label: str
    scale: float = 1
    digits: int = 2


@dataclass(frozen=True)
class StageMetric:
    key: str
    location: Location
    worst: Worst
    display: Display
    json_file: str | None = None
    json_path: str | None = None
    status: Literal["OK", "NEEDS_CONFIG"] = "OK"
    integer: bool = False  # the literal in the source is an int
    current: int | float | None = None  # the literal's value when last read

    @property
    def source(self) -> str:
        return self.location.source

    @property
    def ref(self) -> JsonRef | None:
        if self.json_path is None:
            return None
        return JsonRef(self.json_file, self.json_path)


@dataclass(frozen=True)
class Uncalibrated:
    """A threshold entry discovery found but a calibration never measures."""

    location: Location
    reason: str
    metric: str | None = None
    current: int | float | None = None


@dataclass
class Stage:
    key: str
    test: str  # test file relative to the rootdir
    title: str
    group: str
    base: str
    variant: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    context_vars: list[str] = field(default_factory=list)
    context: dict[str, int | float | str | None] = field(default_factory=dict)
    concurrency: Key | None = None
    gpus: int = 1
    pytest_extra_args: list[str] = field(default_factory=list)
    test_file_sha256: str = ""
    test_logic_sha256: str = ""
    threshold_file: str | None = None
    threshold_file_sha256: str = ""
    threshold_logic_sha256: str = ""  # logic hash of threshold_file
    expected_samples: int | None = None
    sample_counts: dict[str, JsonRef] | None = None  # keys "total" and "ok"
    observation_validity: JsonRef | None = None  # a JSON boolean, true = valid
    allowed_pytest_failure: JsonRef | None = None  # true = rc 1 is expected
    metrics: dict[str, StageMetric] = field(default_factory=dict)
    not_calibrated: list[Uncalibrated] = field(default_factory=list)

    @property
    def aliases(self) -> list[str]:
        """The base tokens that select this stage (``mmmu``; ``tts`` too)."""
        names = [self.base if self.variant is None else f"{self.base}_{self.variant}"]
        if self.variant is not None:
            names.append(self.base)
        return names

    @property
    def thresholds_file(self) -> str:
        """The file whose literals this stage's thresholds are written to."""
        return self.threshold_file or self.test


# -- stages.yaml: reading and writing ----------------------------------------

HEADER = (
    "# Written by pytest-tune-ci discovery (pytest --tune-model NAME"
    " --tune-discover).\n"
    "# Edit config.yaml and discover again rather than editing this file.\n"
)

# Keys the legacy tool wrote (any version) that this reader accepts and drops.
_LEGACY_ONLY = (
    "last_discovered_at",
    "calibration_preset",
    "hf_model_ids",
)
_STAGE_KEYS = (
    "test",
    "title",
    "group",
    "base",
    "extra_env",
    "context_vars",
    "context",
    "variant",
    "concurrency",
    "gpus",
    "pytest_extra_args",
    "test_file_sha256",
    "test_logic_sha256",
    "threshold_file",
    "threshold_file_sha256",
    "threshold_logic_sha256",
    "expected_samples",
    "sample_counts",
    "observation_validity",
    "allowed_pytest_failure",
    "metrics",
    "not_calibrated",
    *_LEGACY_ONLY,
)
_METRIC_KEYS = (
    "source",
    "json_file",
    "json_path",
    "worst",
    "display",
    "status",
    "location",
    "current",
    "integer",
)
_LOCATION_KEYS = ("file", "symbol", "outer_key", "inner_key", "line")


def dump_stages(stages: dict[str, Stage]) -> str:
    """stages.yaml text: deterministic, no timestamps, legacy key order."""
    data = {key: _stage_data(stage) for key, stage in stages.items()}
    body = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
    return HEADER + (body if data else "")


def load_stages(path: Path) -> dict[str, Stage]:
    """Read a stages.yaml written by this plugin or by the legacy tool."""
    from .config import load_yaml  # config imports this module

    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot read: {exc.strerror}") from None
    data = load_yaml(raw, shown)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(shown, "", "expected a mapping of stage keys to stages")
    return {
        str(key): _Reader(shown).stage(str(key), value) for key, value in data.items()
    }


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, as the legacy files do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _location_data(loc: Location) -> dict[str, Any]:
    return {
        "file": loc.file,
        "symbol": loc.symbol,
        "outer_key": loc.outer_key,
        "inner_key": loc.inner_key,
        "line": loc.line,
    }


def _ref_data(ref: JsonRef) -> dict[str, Any]:
    return {"json_file": ref.json_file, "json_path": ref.json_path}


def _metric_data(metric: StageMetric) -> dict[str, Any]:
    return {
        "source": metric.source,
        "json_file": metric.json_file,
        "json_path": metric.json_path,
        "worst": metric.worst,
        "display": {
            "label": metric.display.label,
            "scale": metric.display.scale,
            "digits": metric.display.digits,
        },
        "status": metric.status,
        "location": _location_data(metric.location),
        "current": metric.current,
        "integer": metric.integer,
    }


def _stage_data(stage: Stage) -> dict[str, Any]:
    data: dict[str, Any] = {
        "test": stage.test,
        "title": stage.title,
        "group": stage.group,
        "base": stage.base,
        "extra_env": dict(stage.extra_env),
        "context_vars": list(stage.context_vars),
        "context": dict(stage.context),
    }
    if stage.variant is not None:
        data["variant"] = stage.variant
    data["concurrency"] = stage.concurrency
    data["gpus"] = stage.gpus
    data["pytest_extra_args"] = list(stage.pytest_extra_args)
    data["test_file_sha256"] = stage.test_file_sha256
    data["test_logic_sha256"] = stage.test_logic_sha256
    data["threshold_file"] = stage.threshold_file
    if stage.threshold_file is not None:
        data["threshold_file_sha256"] = stage.threshold_file_sha256
        data["threshold_logic_sha256"] = stage.threshold_logic_sha256
    data["expected_samples"] = stage.expected_samples
    if stage.group != "docs":
        data["sample_counts"] = (
            None
            if stage.sample_counts is None
            else {k: _ref_data(v) for k, v in stage.sample_counts.items()}
        )
    for name in ("observation_validity", "allowed_pytest_failure"):
        ref = getattr(stage, name)
        if ref is not None:
            data[name] = _ref_data(ref)
    data["metrics"] = {k: _metric_data(m) for k, m in stage.metrics.items()}
    data["not_calibrated"] = [
        {
            "location": _location_data(u.location),
            "metric": u.metric,
            "current": u.current,
            "reason": u.reason,
        }
        for u in stage.not_calibrated
    ]
    return data


class _Reader:
    """Turns one stage mapping into a :class:`Stage`; errors name the key."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(self.file, key, message)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        for sub in value:
            if sub not in allowed:
                self.fail(f"{key}.{sub}", f"unknown key{closest(str(sub), allowed)}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def opt_text(self, value: Any, key: str) -> str | None:
        return None if value is None else self.text(value, key)

    def number(self, value: Any, key: str) -> int | float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected a number, got {value!r}")
        return value

    def integer(self, value: Any, key: str, default: int | None) -> int | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {value!r}")
        return value

    def dict_key(self, value: Any, key: str) -> Key | None:
        if value is None or (
            isinstance(value, (int, str)) and not isinstance(value, bool)
        ):
            return value
        self.fail(key, f"expected an integer or string key, got {value!r}")

    def str_list(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {type(value).__name__}")
        return [str(v) for v in value]

    def str_map(self, value: Any, key: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return {str(k): str(v) for k, v in value.items()}

    def ref(self, value: Any, key: str) -> JsonRef | None:
        data = self.mapping(value, key, ("json_file", "json_path"))
        path = self.opt_text(data.get("json_path"), f"{key}.json_path")
        if path is None:
            return None
        return JsonRef(self.opt_text(data.get("json_file"), f"{key}.json_file"), path)

    def location(self, value: Any, key: str) -> Location:
        data = self.mapping(value, key, _LOCATION_KEYS)
        return Location(
            file=self.text(data.get("file"), f"{key}.file"),
            symbol=self.text(data.get("symbol"), f"{key}.symbol"),
            outer_key=self.dict_key(data.get("outer_key"), f"{key}.outer_key"),
            inner_key=self.opt_text(data.get("inner_key"), f"{key}.inner_key"),
            line=self.integer(data.get("line"), f"{key}.line", 0) or 0,
        )

    def metric(self, name: str, value: Any, key: str, file: str) -> StageMetric:
        data = self.mapping(value, key, _METRIC_KEYS)
        if "location" in data:
            loc = self.location(data["location"], f"{key}.location")
        else:
            loc = self.legacy_source(data.get("source"), f"{key}.source", file)
        worst = data.get("worst")
        if worst not in ("min", "max"):
            self.fail(f"{key}.worst", f"expected min or max, got {worst!r}")
        shown = self.mapping(data.get("display"), f"{key}.display", _DISPLAY_KEYS)
        scale = self.number(shown.get("scale"), f"{key}.display.scale")
        digits = self.integer(shown.get("digits"), f"{key}.display.digits", 2)
        status = data.get("status", "OK")
        if status not in ("OK", "NEEDS_CONFIG"):
            self.fail(f"{key}.status", f"expected OK or NEEDS_CONFIG, got {status!r}")
        current = self.number(data.get("current"), f"{key}.current")
        integer = data.get("integer")
        return StageMetric(
            key=name,
            location=loc,
            worst=worst,
            display=Display(
                label=str(shown.get("label", name)),
                scale=1 if scale is None else scale,
                digits=2 if digits is None else digits,
            ),
            json_file=self.opt_text(data.get("json_file"), f"{key}.json_file"),
            json_path=self.opt_text(data.get("json_path"), f"{key}.json_path"),
            status=status,
            integer=isinstance(current, int) if integer is None else bool(integer),
            current=current,
        )

    def legacy_source(self, value: Any, key: str, file: str) -> Location:
        """``NAME``, ``NAME['key']`` or ``NAME[16]['key']`` as a Location."""
        text = self.text(value, key)
        try:
            node = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            node = None
        subs: list[Key] = []
        while isinstance(node, ast.Subscript):
            sub = node.slice
            if not isinstance(sub, ast.Constant) or isinstance(sub.value, bool):
                break
            if not isinstance(sub.value, (int, str)):
                break
            subs.insert(0, sub.value)
            node = node.value
        if not isinstance(node, ast.Name) or len(subs) > 2:
            self.fail(key, f"expected NAME or NAME['key'], got {text!r}")
        inner = subs[-1] if subs and isinstance(subs[-1], str) else None
        outer = subs[0] if len(subs) == 2 or (subs and inner is None) else None
        return Location(file=file, symbol=node.id, outer_key=outer, inner_key=inner)

    def uncalibrated(self, value: Any, key: str) -> Uncalibrated:
        data = self.mapping(value, key, ("location", "metric", "current", "reason"))
        return Uncalibrated(
            location=self.location(data.get("location"), f"{key}.location"),
            reason=str(data.get("reason", "")),
            metric=self.opt_text(data.get("metric"), f"{key}.metric"),
            current=self.number(data.get("current"), f"{key}.current"),
        )

    def stage(self, key: str, value: Any) -> Stage:
        data = self.mapping(value, key, _STAGE_KEYS)
        test = self.text(data.get("test"), f"{key}.test")
        group = self.text(data.get("group"), f"{key}.group")
        variant = self.opt_text(data.get("variant"), f"{key}.variant")
        threshold_file = self.opt_text(
            data.get("threshold_file"), f"{key}.threshold_file"
        )
        file = threshold_file or test
        metrics_raw = data.get("metrics")
        if metrics_raw is None:
            metrics_raw = {}
        if not isinstance(metrics_raw, dict):
            self.fail(f"{key}.metrics", "expected a mapping of metric keys")
        counts_raw = self.mapping(
            data.get("sample_counts"), f"{key}.sample_counts", ("total", "ok")
        )
        counts = {
            name: ref
            for name in ("total", "ok")
            if (ref := self.ref(counts_raw.get(name), f"{key}.sample_counts.{name}"))
        }
        context = data.get("context")
        if context is not None and not isinstance(context, dict):
            self.fail(f"{key}.context", "expected a mapping of names to values")
        not_cal = data.get("not_calibrated")
        if not_cal is not None and not isinstance(not_cal, list):
            self.fail(f"{key}.not_calibrated", "expected a list")
        return Stage(
            key=key,
            test=test,
            title=str(data.get("title") or key),
            group=group,
            base=self.opt_text(data.get("base"), f"{key}.base")
            or legacy_base(key, group, variant),
            variant=variant,
            extra_env=self.str_map(data.get("extra_env"), f"{key}.extra_env"),
            context_vars=self.str_list(data.get("context_vars"), f"{key}.context_vars"),
            context=dict(context or {}),
            concurrency=self.dict_key(data.get("concurrency"), f"{key}.concurrency"),
            gpus=self.integer(data.get("gpus"), f"{key}.gpus", 1) or 0,
            pytest_extra_args=self.str_list(
                data.get("pytest_extra_args"), f"{key}.pytest_extra_args"
            ),
            test_file_sha256=str(data.get("test_file_sha256") or ""),
            test_logic_sha256=str(data.get("test_logic_sha256") or ""),
            threshold_file=threshold_file,
            threshold_file_sha256=str(data.get("threshold_file_sha256") or ""),
            threshold_logic_sha256=str(data.get("threshold_logic_sha256") or ""),
            expected_samples=self.integer(
                data.get("expected_samples"), f"{key}.expected_samples", None
            ),
            sample_counts=counts or None,
            observation_validity=self.ref(
                data.get("observation_validity"), f"{key}.observation_validity"
            ),
            allowed_pytest_failure=self.ref(
                data.get("allowed_pytest_failure"), f"{key}.allowed_pytest_failure"
            ),
            metrics={
                str(name): self.metric(str(name), m, f"{key}.metrics.{name}", file)
                for name, m in metrics_raw.items()
            },
            not_calibrated=[
                self.uncalibrated(u, f"{key}.not_calibrated[{i}]")
                for i, u in enumerate(not_cal or [])
            ],
        )


_DISPLAY_KEYS = ("label", "scale", "digits")


def legacy_base(key: str, group: str, variant: str | None) -> str:
    """The base of a stage key: minus ``_<group>``, then minus ``_<variant>``."""
    if group == "docs":
        return key  # a docs stage's key is its base
    base = key[: -len(group) - 1] if key.endswith(f"_{group}") else key
    if variant and base.endswith(f"_{variant}"):
        base = base[: -len(variant) - 1]
    return base


# -- selecting and listing ---------------------------------------------------


def _aliases(
    stages: dict[str, Stage],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Stage keys by base token and by group, in stages.yaml order."""
    by_base: dict[str, list[str]] = {}
    by_group: dict[str, list[str]] = {}
    for key, stage in stages.items():
        for name in stage.aliases:
            by_base.setdefault(name, []).append(key)
        by_group.setdefault(stage.group, []).append(key)
    return by_base, by_group


def select(stages: dict[str, Stage], spec: str) -> list[str]:
    """Expand ``ALL`` or comma tokens (key, ``@group``, base) to stage keys."""
    if spec.strip() == "ALL":
        return list(stages)
    by_base, by_group = _aliases(stages)
    chosen: dict[str, None] = {}
    unknown: list[str] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token == "ALL":
            hits = list(stages)
        elif token in stages:
            hits = [token]
        elif token.startswith("@") and token[1:] in by_group:
            hits = by_group[token[1:]]
        elif token in by_base:
            hits = by_base[token]
        else:
            unknown.append(token)
            continue
        chosen.update(dict.fromkeys(hits))
    if unknown:
        names = [*stages, *by_base, *(f"@{g}" for g in by_group)]
        hint = closest(unknown[0], names)
        raise TuneError(
            f"unknown stage token(s) {', '.join(map(repr, unknown))}{hint}; "
            f"stage keys: {', '.join(sorted(stages)) or 'none'}; "
            f"bases: {', '.join(sorted(by_base)) or 'none'}; "
            f"groups: {', '.join(sorted('@' + g for g in by_group)) or 'none'}"
        )
    if not chosen:
        raise TuneError(f"--tune-stages {spec!r} selects no stage")
    return list(chosen)


def format_list(stages: dict[str, Stage]) -> list[str]:
    """The ``--tune-stages-list`` lines: bases, then @groups."""
    by_base, by_group = _aliases(stages)
    lines = ["bases:"]
    for base in sorted(by_base):
        keys = by_base[base]
        lines.append(f"  {base}  ({stages[keys[0]].test})")
        lines.extend(f"    {key}  [{stages[key].group}]" for key in keys)
    lines.append("groups:")
    for group in sorted(by_group):
        keys = by_group[group]
        lines.append(f"  @{group} ({len(keys)}): {', '.join(sorted(keys))}")
    return lines
