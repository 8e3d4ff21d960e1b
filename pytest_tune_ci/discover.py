"""Discovery: test sources -> threshold records -> ``stages.yaml``.

Test files are read with ``ast`` and never imported. A threshold candidate is
a module-level numeric literal (``X = 0.56``, ``X: float = 1e-3``) or a
numeric literal inside a module-level dict (``_X_P95[16]["throughput_qps"]``).
Values computed by calls or arithmetic are derived and never thresholds.
Which metric a candidate calibrates comes from the config's ``thresholds:``
mapping, else from the registry's name rules and inner keys.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from pathlib import PurePosixPath

from . import atomic
from . import literals
from .config import MetricSource
from .config import ModelConfig
from .config import ThresholdRef
from .config import split_source
from .errors import ConfigError
from .errors import TuneError
from .errors import closest
from .logic import file_sha256
from .logic import logic_hash
from .stages import JsonRef
from .stages import Key
from .stages import Location
from .stages import Stage
from .stages import StageMetric
from .stages import Uncalibrated
from .stages import dump_stages


CONTEXT_KEYWORDS = ("max_samples", "max_tokens", "max_new_tokens", "max_concurrency")
_UPPER = re.compile(r"_*[A-Z][A-Z0-9_]*")


@dataclass
class DiscoveryResult:
    stages: dict[str, Stage]
    path: Path
    summary_lines: list[str]


@dataclass(frozen=True)
class Candidate:
    """A numeric literal that may be a threshold."""

    location: Location
    value: int | float

    @property
    def integer(self) -> bool:
        return isinstance(self.value, int)


@dataclass(frozen=True)
class _Claim:
    candidate: Candidate
    metric: str
    explicit: bool  # named in thresholds:, not matched by a name rule


@dataclass
class _Source:
    """A parsed Python file: a test file or a ``threshold_file``."""

    rel: str
    raw: bytes
    text: str
    module: ast.Module


@dataclass
class _FileScan:
    """Everything discovery learns about one test file."""

    rel: str
    basename: str
    base: str
    test: _Source
    context_vars: list[str]
    context: dict[str, int | float | str | None]
    concurrency: Key | None
    problems: list[str] = field(default_factory=list)


# -- reading sources ---------------------------------------------------------


def candidates(module: ast.Module, file: str) -> list[Candidate]:
    """Numeric literals bound at module level to UPPER_CASE names.

    A name assigned twice keeps only its last value, as Python does.
    """
    found: dict[str, list[Candidate]] = {}
    for stmt in module.body:
        if isinstance(stmt, ast.Assign):
            names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            value: ast.expr | None = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names, value = [stmt.target.id], stmt.value
        else:
            continue
        for name in names:
            found.pop(name, None)
            if value is not None and _UPPER.fullmatch(name):
                found[name] = list(_literals_of(name, value, file))
    return [c for group in found.values() for c in group]


def _literals_of(name: str, value: ast.expr, file: str) -> Iterable[Candidate]:
    lit = literals.number_of(value)
    if lit is not None:
        yield Candidate(Location(file, name, line=lit.node.lineno), lit.value)
        return
    if not isinstance(value, ast.Dict):
        return
    for key_node, item in zip(value.keys, value.values, strict=True):
        key = literals.dict_key(key_node)
        if key is None:
            continue
        lit = literals.number_of(item)
        if lit is not None:
            # {"throughput_qps": 1.3} holds a metric; {16: 1.3} a level.
            outer, inner = (None, key) if isinstance(key, str) else (key, None)
            loc = Location(file, name, outer, inner, lit.node.lineno)
            yield Candidate(loc, lit.value)
            continue
        if not isinstance(item, ast.Dict):
            continue
        for inner_node, leaf in zip(item.keys, item.values, strict=True):
            inner_key = literals.dict_key(inner_node)
            lit = literals.number_of(leaf)
            if isinstance(inner_key, str) and lit is not None:
                loc = Location(file, name, key, inner_key, lit.node.lineno)
                yield Candidate(loc, lit.value)


def context_vars(module: ast.Module) -> list[str]:
    """UPPER_CASE names passed as ``max_samples=`` and friends, first seen."""
    seen: dict[str, None] = {}
    for node in ast.walk(module):
        if (
            isinstance(node, ast.keyword)
            and node.arg in CONTEXT_KEYWORDS
            and isinstance(node.value, ast.Name)
            and _UPPER.fullmatch(node.value.id)
        ):
            seen.setdefault(node.value.id)
    return list(seen)


def _literal_value(module: ast.Module, name: str) -> int | float | str | None:
    value = literals.assigned_values(module).get(name)
    lit = literals.number_of(value)
    if lit is not None:
        return lit.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    return None


def stage_base(rel: str, model: ModelConfig) -> str:
    path = PurePosixPath(rel)
    stem = path.stem
    if "docs" in path.parts[:-1]:
        return model.stage_base_docs_override or stem
    prefix, suffix = model.stage_base_strip_prefix, model.stage_base_strip_suffix
    if prefix and stem.startswith(prefix):
        stem = stem[len(prefix) :]
    if suffix and stem.endswith(suffix):
        stem = stem[: -len(suffix)]
    return stem


def _read_source(rootdir: Path, rel: str, what: str) -> _Source:
    try:
        raw = (rootdir / rel).read_bytes()
    except OSError as exc:
        raise TuneError(f"{rel}: cannot read {what}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        module = ast.parse(text, filename=rel)
    except UnicodeDecodeError as exc:
        raise TuneError(f"{rel}: {what} is not UTF-8: {exc.reason}") from None
    except SyntaxError as exc:
        raise TuneError(f"{rel}:{exc.lineno}: cannot parse {what}: {exc.msg}") from None
    return _Source(rel, raw, text, module)


def find_test_files(model: ModelConfig, rootdir: Path) -> tuple[list[str], list[str]]:
    """Sorted test files matched by ``test_globs``, plus summary problems."""
    files: set[str] = set()
    problems: list[str] = []
    for i, pattern in enumerate(model.test_globs):
        hits = [
            p.relative_to(rootdir).as_posix()
            for p in rootdir.glob(pattern)
            if p.is_file() and p.suffix == ".py"
        ]
        if not hits:
            problems.append(f"  config: test_globs[{i}] {pattern!r} matches no file")
        files.update(hits)
    return sorted(files), problems


# -- concurrency -------------------------------------------------------------


def _option_concurrency(args: list[str]) -> tuple[str | None, bool]:
    """The ``--concurrency`` value in pytest args, and whether one was given."""
    for i, arg in enumerate(args):
        if arg == "--concurrency" and i + 1 < len(args):
            return args[i + 1], True
        if arg.startswith("--concurrency="):
            return arg.partition("=")[2], True
    return None, False


def _concurrency(
    model: ModelConfig, basename: str, modules: list[ast.Module], rel: str
) -> tuple[Key | None, list[str]]:
    """The one concurrency a run of this test measures: config, option, constant."""
    problems: list[str] = []
    constant = None
    for module in modules:
        value = _literal_value(module, "CONCURRENCY")
        if isinstance(value, int):
            constant = value
            break
    if basename in model.concurrency:
        return model.concurrency[basename], problems
    text, given = _option_concurrency(model.pytest_extra_args.get(basename, []))
    if given:
        try:
            option = int(text or "")
        except ValueError:
            problems.append(
                f"  {rel}: --concurrency {text!r} in pytest_extra_args is not "
                "one integer; set concurrency: in config.yaml"
            )
            return None, problems
        if constant is not None and constant != option:
            problems.append(
                f"  {rel}: pytest_extra_args --concurrency {option} differs from "
                f"CONCURRENCY = {constant}; using {option}"
            )
        return option, problems
    return constant, problems


# -- claiming metrics --------------------------------------------------------


def _ref_of(text: str) -> ThresholdRef:
    """``NAME`` -> (NAME, None); ``NAME[key]`` or ``NAME['key']`` -> (NAME, key)."""
    symbol, _, rest = text.partition("[")
    inner = rest.rstrip("]").strip().strip("'\"")
    return symbol.strip(), inner or None


def _claims(
    found: list[Candidate],
    model: ModelConfig,
    explicit: dict[ThresholdRef, str],
    ignored: set[ThresholdRef],
) -> list[_Claim]:
    out: list[_Claim] = []
    for cand in found:
        loc = cand.location
        if (loc.symbol, None) in ignored or (loc.symbol, loc.inner_key) in ignored:
            continue
        ref = (loc.symbol, loc.inner_key)
        if ref in explicit:
            out.append(_Claim(cand, explicit[ref], True))
            continue
        if loc.inner_key is not None:
            metric = model.registry.match_nested(loc.inner_key)
        else:
            metric = model.registry.match_name(loc.symbol)
        if metric is not None:
            out.append(_Claim(cand, metric, False))
    return out


def _split_by_concurrency(
    claims: list[_Claim], concurrency: Key | None, rel: str, basename: str
) -> tuple[list[_Claim], list[tuple[_Claim, str]], list[str]]:
    """Claims a run measures, and those it cannot, with the reason."""
    keys: dict[str, list[Key]] = {}
    for claim in claims:
        outer = claim.candidate.location.outer_key
        if outer is not None:
            symbol_keys = keys.setdefault(claim.candidate.location.symbol, [])
            if outer not in symbol_keys:
                symbol_keys.append(outer)
    problems: list[str] = []
    for symbol, outer_keys in keys.items():
        shown = ", ".join(map(repr, outer_keys))
        if concurrency is None and len(outer_keys) > 1:
            problems.append(
                f"  {rel}: cannot tell which key of {symbol} ({shown}) the test "
                f"uses; set concurrency: {{{basename}: N}} in config.yaml"
            )
        elif concurrency is not None and concurrency not in outer_keys:
            problems.append(
                f"  {rel}: {symbol} has no entry for the test's concurrency "
                f"{concurrency!r} (keys: {shown})"
            )
    measured: list[_Claim] = []
    skipped: list[tuple[_Claim, str]] = []
    for claim in claims:
        loc = claim.candidate.location
        outer = loc.outer_key
        if outer is None:
            measured.append(claim)
        elif concurrency is None:
            if len(keys[loc.symbol]) == 1:
                measured.append(claim)
            else:
                skipped.append((claim, "concurrency unknown"))
        elif outer == concurrency and type(outer) is type(concurrency):
            measured.append(claim)
        else:
            reason = f"key {outer!r} is not the test's concurrency {concurrency!r}"
            skipped.append((claim, reason))
    return measured, skipped, problems


# -- building stages ---------------------------------------------------------


def _json_ref(entry: str | None, default_file: str | None) -> JsonRef | None:
    if entry is None:
        return None
    file, path = split_source(entry, default_file)
    return JsonRef(file, path)


def _title(base: str, variant: str | None, group: str) -> str:
    parts = [base.replace("_", " ").upper()]
    if variant is not None:
        parts.append(variant.upper())
    parts.append(group.capitalize())
    return " ".join(parts)


@dataclass
class _Unit:
    """One result tree of a test file: the whole file, or one variant."""

    variant: str | None
    source: MetricSource
    constants: _Source  # where its thresholds live


def _stage_key(scan: _FileScan, unit: _Unit, group: str) -> tuple[str, str]:
    base = unit.source.stage_base_override or scan.base
    if unit.variant is None or unit.source.omit_variant_suffix:
        return f"{base}_{group}", base
    return f"{base}_{unit.variant}_{group}", base


def _new_stage(model: ModelConfig, scan: _FileScan, unit: _Unit, group: str) -> Stage:
    key, base = _stage_key(scan, unit, group)
    src = unit.source
    counts = src.counts_for(group)
    sample_counts: dict[str, JsonRef] = {}
    if counts is not None:
        for name, entry in (("total", counts.total), ("ok", counts.ok)):
            ref = _json_ref(entry, src.json_file)
            if ref is not None:
                sample_counts[name] = ref
    thr = unit.constants.rel if src.threshold_file else None
    return Stage(
        key=key,
        test=scan.rel,
        title=_title(base, unit.variant, group),
        group=group,
        base=base,
        variant=unit.variant,
        extra_env=dict(model.extra_env.get(scan.basename, {})),
        context_vars=list(src.context_vars)
        if src.context_vars is not None
        else list(scan.context_vars),
        context=dict(scan.context),
        concurrency=scan.concurrency,
        gpus=model.gpus_for(scan.basename),
        pytest_extra_args=list(model.pytest_extra_args.get(scan.basename, [])),
        test_file_sha256=file_sha256(scan.test.raw),
        threshold_file=thr,
        threshold_file_sha256=file_sha256(unit.constants.raw) if thr else "",
        expected_samples=src.expected_for(group),
        sample_counts=sample_counts or None,
        observation_validity=_json_ref(src.observation_validity, src.json_file),
        allowed_pytest_failure=_json_ref(src.allowed_pytest_failure, src.json_file),
    )


def _metric(model: ModelConfig, unit: _Unit, claim: _Claim) -> StageMetric:
    spec = model.registry[claim.metric]
    entry = unit.source.paths.get(claim.metric)
    file, path = (
        (None, None) if entry is None else split_source(entry, unit.source.json_file)
    )
    return StageMetric(
        key=claim.metric,
        location=claim.candidate.location,
        worst=spec.worst,
        display=spec.display,
        json_file=file,
        json_path=path,
        status="OK" if file and path else "NEEDS_CONFIG",
        integer=claim.candidate.integer,
        current=claim.candidate.value,
    )


def _add_metric(
    stage: Stage,
    metric: StageMetric,
    claim: _Claim,
    claims: dict[str, _Claim],
    scan: _FileScan,
    model: ModelConfig,
) -> None:
    old = claims.get(metric.key)
    if old is None:
        stage.metrics[metric.key] = metric
        claims[metric.key] = claim
        return
    if old.explicit != claim.explicit:
        winner, loser = (old, claim) if old.explicit else (claim, old)
        if winner is claim:
            stage.metrics[metric.key] = metric
            claims[metric.key] = claim
        scan.problems.append(
            f"  {scan.rel}: {loser.candidate.location.ref} not used for "
            f"{metric.key}: thresholds: names {winner.candidate.location.ref}"
        )
        return
    first, second = old.candidate.location, claim.candidate.location
    raise ConfigError(
        scan.rel,
        f"{stage.key}.{metric.key}",
        f"{first.ref} (line {first.line}) and {second.ref} (line {second.line}) "
        f"both claim this metric; name one in metric_sources.{scan.basename}"
        f".ignored_constants or map them under thresholds: in {model.path.name}",
    )


def _unit_stages(model: ModelConfig, scan: _FileScan, unit: _Unit) -> list[Stage]:
    src = unit.source
    found = candidates(unit.constants.module, unit.constants.rel)
    explicit = model.thresholds.get(scan.basename, {})
    ignored = {_ref_of(name) for name in src.ignored_constants}
    if unit.variant is not None:
        pattern = re.compile(src.constant_filter or ".*")
        found = [c for c in found if pattern.match(c.location.symbol.lstrip("_"))]
    claims = _claims(found, model, explicit, ignored)
    measured, skipped, problems = _split_by_concurrency(
        claims, scan.concurrency, scan.rel, scan.basename
    )
    scan.problems.extend(problems)
    stages: dict[str, Stage] = {}
    owners: dict[str, dict[str, _Claim]] = {}
    for claim in claims:  # file order decides the order of stages
        group = model.registry[claim.metric].group
        if group not in stages:
            stages[group] = _new_stage(model, scan, unit, group)
            owners[group] = {}
    for claim in measured:
        group = model.registry[claim.metric].group
        metric = _metric(model, unit, claim)
        _add_metric(stages[group], metric, claim, owners[group], scan, model)
    for claim, reason in skipped:
        stage = stages[model.registry[claim.metric].group]
        stage.not_calibrated.append(
            Uncalibrated(
                claim.candidate.location,
                reason,
                metric=claim.metric,
                current=claim.candidate.value,
            )
        )
    return list(stages.values())


def _units(
    scan: _FileScan, source: MetricSource, rootdir: Path, cache: dict[str, _Source]
) -> list[_Unit]:
    def constants_of(src: MetricSource) -> _Source:
        rel = src.threshold_file
        if rel is None:
            return scan.test
        if rel not in cache:
            cache[rel] = _read_source(rootdir, rel, "threshold_file")
        return cache[rel]

    if not source.variants:
        return [_Unit(None, source, constants_of(source))]
    return [
        _Unit(name, variant, constants_of(variant))
        for name, variant in source.variants.items()
    ]


def _scan_file(model: ModelConfig, rootdir: Path, rel: str) -> _FileScan:
    test = _read_source(rootdir, rel, "test file")
    basename = PurePosixPath(rel).name
    names = context_vars(test.module)
    scan = _FileScan(
        rel=rel,
        basename=basename,
        base=stage_base(rel, model),
        test=test,
        context_vars=names,
        context={name: _literal_value(test.module, name) for name in names},
        concurrency=None,
    )
    return scan


def _file_stages(
    model: ModelConfig, rootdir: Path, rel: str, cache: dict[str, _Source]
) -> tuple[list[Stage], list[str]]:
    scan = _scan_file(model, rootdir, rel)
    if "docs" in PurePosixPath(rel).parts[:-1]:
        stage = Stage(
            key=scan.base,
            test=rel,
            title="Docs smoke",
            group="docs",
            base=scan.base,
            extra_env=dict(model.extra_env.get(scan.basename, {})),
            context_vars=scan.context_vars,
            context=scan.context,
            gpus=model.gpus_for(scan.basename),
            pytest_extra_args=list(model.pytest_extra_args.get(scan.basename, [])),
            test_file_sha256=file_sha256(scan.test.raw),
            test_logic_sha256=logic_hash(scan.test.text, []),
        )
        return [stage], []
    source = model.metric_sources.get(scan.basename)
    if source is None:
        scan.problems.append(
            f"  {rel}: no metric_sources entry in config; its metrics need config"
        )
        source = MetricSource()
    units = _units(scan, source, rootdir, cache)
    modules = [scan.test.module, *(u.constants.module for u in units)]
    scan.concurrency, problems = _concurrency(model, scan.basename, modules, rel)
    scan.problems.extend(problems)
    stages = [stage for unit in units for stage in _unit_stages(model, scan, unit)]
    _check_names(scan, units, model)
    _set_logic_hashes(stages, scan, cache)
    return stages, scan.problems


def _check_names(scan: _FileScan, units: list[_Unit], model: ModelConfig) -> None:
    """Summary lines for ignored_constants and thresholds: that name nothing."""
    for unit in units:
        found = candidates(unit.constants.module, unit.constants.rel)
        refs = {(c.location.symbol, c.location.inner_key) for c in found}
        symbols = {c.location.symbol for c in found}
        for name in unit.source.ignored_constants:
            symbol, inner = _ref_of(name)
            if (symbol, inner) not in refs and not (
                inner is None and symbol in symbols
            ):
                scan.problems.append(
                    f"  {unit.constants.rel}: ignored constant {name} is not a "
                    f"numeric constant there{closest(symbol, symbols)}"
                )
    every = {
        (c.location.symbol, c.location.inner_key)
        for unit in units
        for c in candidates(unit.constants.module, unit.constants.rel)
    }
    dicts = {symbol for symbol, inner in every if inner is not None}
    for symbol, inner in model.thresholds.get(scan.basename, {}):
        if (symbol, inner) in every:
            continue
        if inner is None and symbol in dicts:
            what = f"is a dict of metrics; name its entries as {symbol}[inner_key]"
        else:
            what = "is not a numeric constant there"
        shown = symbol if inner is None else f"{symbol}[{inner!r}]"
        scan.problems.append(f"  {scan.rel}: thresholds: {shown} {what}")


def _locations(stages: Iterable[Stage]) -> list[Location]:
    locs: list[Location] = []
    for stage in stages:
        locs.extend(m.location for m in stage.metrics.values())
        locs.extend(u.location for u in stage.not_calibrated)
    return locs


def _set_logic_hashes(
    stages: list[Stage], scan: _FileScan, cache: dict[str, _Source]
) -> None:
    locs = _locations(stages)
    test_hash = logic_hash(scan.test.text, [x for x in locs if x.file == scan.rel])
    for stage in stages:
        stage.test_logic_sha256 = test_hash
        thr = stage.threshold_file
        if thr is not None:
            mine = [x for x in locs if x.file == thr]
            stage.threshold_logic_sha256 = logic_hash(cache[thr].text, mine)


# -- the command -------------------------------------------------------------


def _config_key_problems(model: ModelConfig, files: list[str]) -> list[str]:
    """Per-test config keys whose basename matches no discovered test file."""
    names = {PurePosixPath(f).name for f in files}
    sections: dict[str, Iterable[str]] = {
        "metric_sources": model.metric_sources,
        "thresholds": model.thresholds,
        "concurrency": model.concurrency,
        "extra_env": model.extra_env,
        "gpus_per_test": model.gpus_per_test,
        "pytest_extra_args": model.pytest_extra_args,
        "hf_model_ids_by_test": model.hf_model_ids_by_test,
        "hf_datasets_by_test": model.hf_datasets_by_test,
        "requires_speaker_sim_by_test": model.requires_speaker_sim_by_test,
    }
    return [
        f"  config: {section}.{name} matches no test file{closest(name, names)}"
        for section, keys in sections.items()
        for name in keys
        if name not in names
    ]


def _origin(stage: Stage) -> str:
    if stage.variant is None:
        return stage.test
    return f"{stage.test} (variant {stage.variant})"


def discover_stages(
    model: ModelConfig, rootdir: Path
) -> tuple[dict[str, Stage], list[str]]:
    """The stages of ``model``'s test files, and the problem lines found."""
    files, problems = find_test_files(model, rootdir)
    problems.extend(_config_key_problems(model, files))
    stages: dict[str, Stage] = {}
    cache: dict[str, _Source] = {}
    for rel in files:
        file_stages, file_problems = _file_stages(model, rootdir, rel, cache)
        problems.extend(file_problems)
        for stage in file_stages:
            if stage.key in stages:
                first = stages[stage.key]
                raise TuneError(
                    f"stage key {stage.key!r} comes from both {_origin(first)} "
                    f"and {_origin(stage)}; give them distinct bases "
                    "(stage_base_strip_prefix/suffix, stage_base_override)"
                )
            stages[stage.key] = stage
    for stage in stages.values():
        for metric in stage.metrics.values():
            if metric.status == "NEEDS_CONFIG":
                what = "json_file" if metric.json_path else "path"
                problems.append(
                    f"  {stage.test}: {metric.key} ({metric.location.ref}) of "
                    f"{stage.key} has no JSON {what} in metric_sources "
                    "(NEEDS_CONFIG)"
                )
    return stages, list(dict.fromkeys(problems))


def discover_model(model: ModelConfig, rootdir: Path) -> DiscoveryResult:
    """Discover ``model``'s stages and write them to ``model.stages_path``."""
    stages, problems = discover_stages(model, rootdir)
    path = model.stages_path
    atomic.write_text(path, dump_stages(stages))
    metrics = [m for s in stages.values() for m in s.metrics.values()]
    ok = sum(1 for m in metrics if m.status == "OK")
    head = (
        f"[{model.name}] {len(stages)} stages written to {_show(path, rootdir)}, "
        f"{ok} metric(s) OK, {len(metrics) - ok} need config"
    )
    return DiscoveryResult(stages=stages, path=path, summary_lines=[head, *problems])


def _show(path: Path, rootdir: Path) -> str:
    try:
        return path.resolve().relative_to(rootdir.resolve()).as_posix()
    except ValueError:
        return str(path)


def check_fresh(stages: dict[str, Stage], rootdir: Path) -> list[str]:
    """Files whose logic changed since discovery (or that are gone).

    Each file's hash is recomputed from the threshold locations recorded in
    ``stages``, so rewriting a threshold literal never makes a file stale.
    """
    locs: dict[str, list[Location]] = {}
    recorded: dict[str, set[str]] = {}
    for stage in stages.values():
        mine = _locations([stage])
        files = [(stage.test, stage.test_logic_sha256)]
        if stage.threshold_file is not None:
            files.append((stage.threshold_file, stage.threshold_logic_sha256))
        for file, digest in files:
            locs.setdefault(file, []).extend(x for x in mine if x.file == file)
            recorded.setdefault(file, set()).add(digest)
    stale: list[str] = []
    for file, digests in recorded.items():
        try:
            text = (rootdir / file).read_text(encoding="utf-8")
            current = logic_hash(text, locs[file])
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            stale.append(file)
            continue
        if digests != {current}:
            stale.append(file)
    return sorted(stale)


__all__ = [
    "Candidate",
    "DiscoveryResult",
    "candidates",
    "check_fresh",
    "context_vars",
    "discover_model",
    "discover_stages",
    "find_test_files",
    "stage_base",
]
