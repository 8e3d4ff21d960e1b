"""The data behind report.md and report.json, read from a run directory.

Everything comes from the run dir (plan, precheck, stages and config
snapshots, stage-runs, applied changes), never from the machine at render
time, so rendering the same run dir twice gives the same bytes.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

from . import rundir
from . import stats
from .errors import ConfigError
from .errors import RunError
from .rundir import Completeness
from .rundir import Plan
from .rundir import StageRun
from .stages import Display
from .stages import Location
from .stages import Stage
from .stages import StageMetric
from .stages import Worst
from .stats import Number
from .stats import Summary


SCHEMA = 1
PLOTS_DIR = "plots"
PLOT_HINT = "pip install pytest-tune-ci[plot]"
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
NOISE_CV_DEFAULTS = {"speed": 0.05}
NOT_RETRIES = ("ok", "threshold")  # attempt outcomes that are not a retry
MAX_MISSING_LINES = 30

RATES_LEGEND = (
    "False-alarm rates are per CI run, for a healthy run like the observed "
    "ones, at the threshold CI enforces (the constant × the test's own slack, "
    "`ci_slack`). *Distribution-free*: for the proposal, derived from the N "
    "runs and failing none of them, at most 1/(N+1) (the chance the next run "
    "is worse than all N); for the current value, fixed before the runs and "
    "failing k of them, (k+1)/(N+2) (rule of succession). *Normal fit*: the "
    "tail of a normal distribution fitted to the N runs beyond the threshold "
    "(n/a with fewer than 2 runs or no spread)."
)


# -- the data behind both files ---------------------------------------------


@dataclass
class RunRow:
    run: int
    status: str  # ok | incomplete | failed | missing
    reason: str
    samples_total: int | None
    samples_ok: int | None
    metrics: dict[str, float | None]
    attempts: int
    duration_s: float | None
    worker: str
    gpus: list[int]
    started_at: str
    finished_at: str
    overlaps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rate:
    """The false-alarm estimates of one threshold value."""

    value: Number | None  # the constant as written
    factor: float  # the test's own slack
    enforced: float | None  # value × factor: what CI compares against
    empirical: float | None  # distribution-free
    normal: float | None  # normal fit
    fails_observed: int | None  # observed runs the enforced value fails


@dataclass
class MetricReport:
    key: str
    threshold_id: str
    display: Display
    worst: str
    group: str
    integer: bool
    location: Location
    status: str
    per_run: list[float | None]  # aligned with the stage's runs
    values: list[float]  # finite values of complete runs, in run order
    worst_raw: float | None
    summary: Summary
    current: Number | None
    policy: str
    proposed: Number | None
    direction: str
    delta_pct: float | None
    now: Rate
    after: Rate
    noise_cv_max: float | None
    outlier_runs: list[int]
    flags: list[str]

    @property
    def changed(self) -> bool:
        return self.proposed is not None and self.direction != "equal"


@dataclass
class Reliability:
    attempts: int
    retries: dict[str, int]
    median_duration_s: float | None
    max_duration_s: float | None


@dataclass
class StageReport:
    key: str
    title: str
    group: str
    test: str
    threshold_file: str | None
    variant: str | None
    concurrency: int | str | None
    context: dict[str, int | float | str | None]
    gpus: int | None
    known: bool  # described in stages.yaml
    runs: list[RunRow]
    metrics: list[MetricReport]
    reliability: Reliability
    plot: str | None = None  # relative path of the PNG, once written


@dataclass(frozen=True)
class AppliedChange:
    stage_key: str
    metric_key: str
    file: str
    ref: str
    old: Number | None
    new: Number | None
    direction: str
    delta_pct: float | None
    record: dict[str, Any]  # the applied.json entry as written


@dataclass
class ReportData:
    run_dir: str
    plan: Plan
    precheck: dict[str, Any]
    completeness: Completeness
    partial: bool
    finished_at: str | None
    stages: list[StageReport]
    applied: list[AppliedChange]
    workspace_diff: bool
    plot_note: str | None = None  # why there are no plots

    @property
    def changes(self) -> list[tuple[StageReport, MetricReport]]:
        return [(s, m) for s in self.stages for m in s.metrics if m.changed]


@dataclass
class ReportResult:
    exit_code: int  # 0 written; 1 refused because incomplete
    lines: list[str]
    path: Path | None


@dataclass(frozen=True)
class ReportConfig:
    """The parts of the model config the report uses."""

    threshold_policy: dict[str, str] = field(default_factory=dict)
    ci_slack: dict[str, float] = field(default_factory=dict)
    noise_cv_max: dict[str, float] = field(default_factory=dict)
    integer_metrics: frozenset[str] = frozenset()  # metrics that count things


# -- reading the run dir ----------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None


def _load_stages(run_dir: Path) -> dict[str, Stage]:
    path = run_dir / rundir.STAGES_SNAPSHOT
    if not path.exists():
        return {}
    from .stages import load_stages

    return load_stages(path)


def _load_config(run_dir: Path, plan: Plan) -> ReportConfig:
    path = run_dir / rundir.CONFIG_SNAPSHOT
    if not path.exists():
        from .metrics import default_registry

        registry = default_registry()
        counts = frozenset(k for k in registry.keys if registry[k].integer)
        return ReportConfig(integer_metrics=counts)
    from .config import load_config_file

    root = Path(plan.rootdir) if plan.rootdir else run_dir
    model = load_config_file(path, root)
    registry = model.registry
    return ReportConfig(
        threshold_policy={k: p.text for k, p in model.threshold_policy.items()},
        ci_slack=dict(model.ci_slack),
        noise_cv_max=dict(model.noise_cv_max),
        integer_metrics=frozenset(k for k in registry.keys if registry[k].integer),
    )


def _policy_for(cfg: ReportConfig, group: str, where: str) -> stats.Policy:
    key = group if group in cfg.threshold_policy else "default"
    text = cfg.threshold_policy.get(key)
    if text is None:
        return stats.WORST
    try:
        return stats.parse_policy(text)
    except ValueError as exc:
        raise ConfigError(where, f"threshold_policy.{key}", str(exc)) from None


def _slack_for(cfg: ReportConfig, threshold_id: str, metric: str, group: str) -> float:
    for key in (threshold_id, metric, group):
        if key in cfg.ci_slack:
            return float(cfg.ci_slack[key])
    return 1.0


def _noise_for(cfg: ReportConfig, group: str) -> float | None:
    if group in cfg.noise_cv_max:
        return float(cfg.noise_cv_max[group])
    return NOISE_CV_DEFAULTS.get(group)


def _when(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _run_row(k: int, record: StageRun | None, missing: str | None) -> RunRow:
    if record is None:
        return RunRow(
            run=k,
            status="missing",
            reason=missing or "missing file",
            samples_total=None,
            samples_ok=None,
            metrics={},
            attempts=0,
            duration_s=None,
            worker="",
            gpus=[],
            started_at="",
            finished_at="",
        )
    counts = record.sample_counts or {}
    return RunRow(
        run=k,
        status=record.status,
        reason=record.reason,
        samples_total=_count(counts.get("total")),
        samples_ok=_count(counts.get("ok")),
        metrics=dict(record.metrics),
        attempts=len(record.attempts),
        duration_s=_finite(record.duration_s),
        worker=record.worker,
        gpus=list(record.gpus),
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


def _rate(
    values: list[float], value: Number | None, factor: float, worst: str, *, fixed: bool
) -> Rate:
    if value is None:
        return Rate(None, factor, None, None, None, None)
    threshold = stats.enforced(float(value), factor)
    if not values:
        return Rate(value, factor, threshold, None, None, None)
    op = _op(worst)
    empirical = (
        stats.rate_fixed(values, threshold, op)
        if fixed
        else stats.rate_derived(values, threshold, op)
    )
    return Rate(
        value=value,
        factor=factor,
        enforced=threshold,
        empirical=empirical,
        normal=stats.rate_normal(values, threshold, op),
        fails_observed=stats.count_failing(values, threshold, op),
    )


def _finite(value: object) -> float | None:
    if rundir.is_finite_number(value):
        return float(value)  # type: ignore[arg-type]
    return None


def _op(worst: str) -> Worst:
    return "max" if worst == "max" else "min"


def _keeps_int(metric: StageMetric, cfg: ReportConfig) -> bool:
    # A count's bound stays a whole number: the metric counts things, or its
    # literal is an int, and it is shown without decimals or scale.
    display = metric.display
    if display.digits > 0 or display.scale != 1:
        return False
    current = metric.current
    int_literal = isinstance(current, int) and not isinstance(current, bool)
    return metric.key in cfg.integer_metrics or metric.integer or int_literal


def _metric_report(
    stage: Stage,
    metric: StageMetric,
    runs: list[RunRow],
    cfg: ReportConfig,
    config_file: str,
) -> MetricReport:
    op = _op(metric.worst)
    threshold_id = f"{stage.key}.{metric.key}"
    per_run: list[float | None] = []
    for row in runs:
        raw = row.metrics.get(metric.key) if row.status == "ok" else None
        per_run.append(_finite(raw))
    values = [v for v in per_run if v is not None]
    policy = _policy_for(cfg, stage.group, config_file)
    proposed = stats.propose(
        values, op, policy, metric.display, integer=_keeps_int(metric, cfg)
    )
    current = metric.current
    factor = _slack_for(cfg, threshold_id, metric.key, stage.group)
    now = _rate(values, current, factor, op, fixed=True)
    after = _rate(values, proposed, factor, op, fixed=False)
    summary = stats.summarize(values)
    noise = _noise_for(cfg, stage.group)
    display = metric.display
    resolution = 10.0 ** (-display.digits) / abs(display.scale or 1)
    index = stats.outliers(values, resolution=resolution)
    run_numbers = [
        row.run for row, v in zip(runs, per_run, strict=True) if v is not None
    ]
    outlier_runs = [run_numbers[i] for i in index]
    flags: list[str] = []
    if metric.status != "OK" or metric.json_path is None:
        flags.append("needs_config")
    if noise is not None and summary.cv is not None and summary.cv > noise:
        flags.append("high_noise")
    flags.extend(f"outlier:run{k}" for k in outlier_runs)
    if now.fails_observed:
        flags.append("current_fails_observed")
    return MetricReport(
        key=metric.key,
        threshold_id=threshold_id,
        display=display,
        worst=op,
        group=stage.group,
        integer=metric.integer,
        location=metric.location,
        status=metric.status,
        per_run=per_run,
        values=values,
        worst_raw=stats.worst_of(values, op),
        summary=summary,
        current=current,
        policy=str(policy),
        proposed=proposed,
        direction=stats.direction(current, proposed, op),
        delta_pct=stats.delta_pct(current, proposed),
        now=now,
        after=after,
        noise_cv_max=noise,
        outlier_runs=outlier_runs,
        flags=flags,
    )


def _reliability(runs: list[RunRow], records: list[StageRun | None]) -> Reliability:
    retries: Counter[str] = Counter()
    attempts = 0
    for record in records:
        if record is None:
            continue
        attempts += len(record.attempts)
        retries.update(
            a.outcome for a in record.attempts if a.outcome not in NOT_RETRIES
        )
    durations = [r.duration_s for r in runs if r.duration_s is not None]
    return Reliability(
        attempts=attempts,
        retries=dict(sorted(retries.items())),
        median_duration_s=float(statistics.median(durations)) if durations else None,
        max_duration_s=max(durations) if durations else None,
    )


def _mark_overlaps(stages: list[StageReport]) -> None:
    """Note on each stage-run the stage-runs of *other* pytest passes it overlapped.

    Stage-runs of the same test file and repeat come from one pytest pass, so
    they share their time span by design.
    """
    spans: list[tuple[str, int, str, datetime, datetime, RunRow]] = []
    for stage in stages:
        for row in stage.runs:
            start, end = _when(row.started_at), _when(row.finished_at)
            if start is not None and end is not None and start < end:
                spans.append((stage.key, row.run, stage.test, start, end, row))
    for i, (_key, k, test, start, end, row) in enumerate(spans):
        for j, (key2, k2, test2, start2, end2, _row2) in enumerate(spans):
            if i == j or (test == test2 and k == k2):
                continue
            if start < end2 and start2 < end:
                row.overlaps.append(f"{key2}#{k2}")


def _stage_report(
    key: str,
    stage: Stage | None,
    records: list[StageRun | None],
    reasons: dict[int, str],
    cfg: ReportConfig,
    config_file: str,
) -> StageReport:
    runs = [_run_row(k, rec, reasons.get(k)) for k, rec in enumerate(records, 1)]
    if stage is None:
        return StageReport(
            key=key,
            title=key,
            group="?",
            test="?",
            threshold_file=None,
            variant=None,
            concurrency=None,
            context={},
            gpus=None,
            known=False,
            runs=runs,
            metrics=[],
            reliability=_reliability(runs, records),
        )
    metrics = [
        _metric_report(stage, m, runs, cfg, config_file) for m in stage.metrics.values()
    ]
    context: dict[str, int | float | str | None] = {
        name: stage.context.get(name) for name in stage.context_vars
    }
    context.update({k: v for k, v in stage.context.items() if k not in context})
    return StageReport(
        key=key,
        title=stage.title,
        group=stage.group,
        test=stage.test,
        threshold_file=stage.threshold_file,
        variant=stage.variant,
        concurrency=stage.concurrency,
        context=context,
        gpus=stage.gpus,
        known=True,
        runs=runs,
        metrics=metrics,
        reliability=_reliability(runs, records),
    )


def _number(value: object) -> Number | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _applied(run_dir: Path, stages: list[StageReport]) -> list[AppliedChange]:
    path = run_dir / rundir.APPLIED
    data = _read_json(path)
    if data is None:
        return []
    entries = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise RunError(f"{path}: expected {{'changes': [...]}}")
    worst_ops = {(s.key, m.key): m.worst for s in stages for m in s.metrics}
    out: list[AppliedChange] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise RunError(f"{path}: changes: expected objects, got {entry!r}")
        stage_key = str(entry.get("stage_key", "?"))
        metric_key = str(entry.get("metric_key", "?"))
        old, new = _number(entry.get("old")), _number(entry.get("new"))
        op = worst_ops.get((stage_key, metric_key))
        if op is not None:
            direction = stats.direction(old, new, _op(op))
        else:
            direction = str(entry.get("direction") or "unknown")
        out.append(
            AppliedChange(
                stage_key=stage_key,
                metric_key=metric_key,
                file=str(entry.get("file", "")),
                ref=str(entry.get("ref") or entry.get("source") or metric_key),
                old=old,
                new=new,
                direction=direction,
                delta_pct=stats.delta_pct(old, new),
                record=entry,
            )
        )
    return out


def _precheck(run_dir: Path, plan: Plan) -> dict[str, Any]:
    data = _read_json(run_dir / rundir.PRECHECK)
    if isinstance(data, dict):
        return data
    return dict(plan.precheck) if isinstance(plan.precheck, dict) else {}


def build_report(run_dir: Path) -> ReportData:
    """Everything in report.md and report.json, read from ``run_dir``."""
    run_dir = Path(os.path.abspath(run_dir))
    plan = rundir.read_plan(run_dir)
    complete = rundir.completeness(run_dir, plan)
    stage_defs = _load_stages(run_dir)
    cfg = _load_config(run_dir, plan)
    config_file = str(run_dir / rundir.CONFIG_SNAPSHOT)
    reasons = {(m.stage, m.run): m.reason for m in complete.missing}
    stages: list[StageReport] = []
    all_records: list[StageRun] = []
    for key in plan.stages:
        records = [
            rundir.read_stage_run(run_dir, key, k) for k in range(1, plan.repeats + 1)
        ]
        all_records.extend(r for r in records if r is not None)
        stage_reasons = {k: why for (s, k), why in reasons.items() if s == key}
        stages.append(
            _stage_report(
                key, stage_defs.get(key), records, stage_reasons, cfg, config_file
            )
        )
    _mark_overlaps(stages)
    finished = plan.finished_at or max(
        (r.finished_at for r in all_records if r.finished_at), default=None
    )
    return ReportData(
        run_dir=str(run_dir),
        plan=plan,
        precheck=_precheck(run_dir, plan),
        completeness=complete,
        partial=not complete.complete,
        finished_at=finished,
        stages=stages,
        applied=_applied(run_dir, stages),
        workspace_diff=(run_dir / rundir.WORKSPACE_DIFF).exists(),
    )


def _gpu(precheck: dict[str, Any]) -> dict[str, Any]:
    gpu = precheck.get("gpu")
    return gpu if isinstance(gpu, dict) else {}
