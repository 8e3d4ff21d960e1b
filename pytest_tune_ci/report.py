"""report.md, report.json and the plots of one run directory.

Everything is read from the run dir (plan, precheck, stages and config
snapshots, stage-runs, applied changes), never from the machine at render
time, so rendering the same run dir twice gives the same bytes. report.json
is the input of ``--tune-apply-plan``.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

from . import atomic
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


# -- formatting -------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def shown(raw: float | None, display: Display) -> str:
    """``raw`` in display units: × scale, at the display's digits."""
    if raw is None:
        return "?"
    return f"{raw * display.scale:.{max(display.digits, 0)}f}"


def literal(value: Number | None) -> str:
    """A constant as it reads in source (the shortest repr)."""
    return "?" if value is None else repr(value)


def pct(rate: float | None, *, bound: bool = False) -> str:
    if rate is None:
        return "n/a"
    if 0 < rate < 0.001:
        return "<0.1%"
    return ("≤" if bound else "") + f"{rate * 100:.1f}%"


def direction_text(direction: str, delta: float | None) -> str:
    if direction in ("tightens", "loosens") and delta is not None:
        return f"{direction} ({delta:+.1f}%)"
    return direction


def _rates(rate: Rate, *, bound: bool) -> str:
    if rate.value is None:
        return "n/a"
    # A derived value that fails no observed run has an upper bound, not a value.
    is_bound = bound and rate.fails_observed == 0
    return f"{pct(rate.empirical, bound=is_bound)} (normal {pct(rate.normal)})"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _gpu(precheck: dict[str, Any]) -> dict[str, Any]:
    gpu = precheck.get("gpu")
    return gpu if isinstance(gpu, dict) else {}


def _gpu_model(precheck: dict[str, Any]) -> str:
    model = _gpu(precheck).get("model")
    return str(model) if model else "?"


# -- report.md --------------------------------------------------------------


def _summary_lines(data: ReportData) -> list[str]:
    rows = [
        [
            f"`{s.key}`",
            f"`{m.location.ref}`",
            literal(m.current),
            literal(m.proposed),
            direction_text(m.direction, m.delta_pct),
            _rates(m.now, bound=False),
            _rates(m.after, bound=True),
        ]
        for s, m in data.changes
    ]
    if not rows:
        return [
            "No threshold changes proposed: every proposal equals the current value."
        ]
    header = [
        "Stage",
        "Threshold",
        "Current",
        "Proposed",
        "Direction",
        "False alarm now",
        "False alarm after",
    ]
    return _table(header, rows)


def summary_table_md(run_dir: Path) -> str:
    """The header summary table (for ``GITHUB_STEP_SUMMARY``)."""
    data = build_report(run_dir)
    return _summary_md(data)


def _summary_md(data: ReportData) -> str:
    plan = data.plan
    title = f"### pytest-tune-ci: {plan.model} (N={plan.repeats})"
    if data.partial:
        title += " — PARTIAL"
    return "\n".join([title, "", *_summary_lines(data)]) + "\n"


def _header(data: ReportData) -> list[str]:
    plan = data.plan
    lines = [f"# CI threshold calibration: {plan.model}"]
    if data.partial:
        c = data.completeness
        lines.append(
            f"> **PARTIAL**: {c.total - c.ok} of {c.total} stage-runs are missing or "
            "incomplete; statistics use the complete runs only. Do not apply."
        )
    lines.append("")
    commit = f"`{plan.git_sha or '?'}`"
    if plan.git_branch:
        commit += f" on `{plan.git_branch}`"
    if plan.dirty:
        commit += " (dirty)"
    stages = ", ".join(f"`{k}`" for k in plan.stages)
    lines += [
        f"- Model: `{plan.model}`",
        f"- Stages ({len(plan.stages)}): {stages}",
        f"- Runs per stage (N): {plan.repeats}",
        f"- Run dir: `{data.run_dir}`",
        f"- Commit: {commit}",
        "",
        "## Summary",
        "",
        *_summary_lines(data),
        "",
        RATES_LEGEND,
        "",
    ]
    return lines


def _context_line(stage: StageReport, data: ReportData) -> str:
    parts = [
        f"{stage.gpus if stage.gpus is not None else '?'}× {_gpu_model(data.precheck)}"
    ]
    parts += [f"{name}={'?' if v is None else v}" for name, v in stage.context.items()]
    if stage.concurrency is not None and "CONCURRENCY" not in stage.context:
        parts.append(f"concurrency={stage.concurrency}")
    n_ok = sum(1 for r in stage.runs if r.status == "ok")
    runs = f"N={data.plan.repeats} runs"
    parts.append(runs if n_ok == data.plan.repeats else f"{runs} ({n_ok} complete)")
    return "Context: " + " · ".join(parts)


def _run_cells(row: RunRow, stage: StageReport, metric_col: list[str]) -> list[str]:
    def count(v: int | None) -> str:
        return "?" if v is None else str(v)

    label = str(row.run)
    if row.status != "ok":
        label += f" ({row.status}: {row.reason})" if row.reason else f" ({row.status})"
        return [label, count(row.samples_total), count(row.samples_ok)] + [
            "—" for _ in metric_col
        ]
    return [label, count(row.samples_total), count(row.samples_ok), *metric_col]


def _runs_table(stage: StageReport) -> list[str]:
    header = ["Run", "Samples run", "Samples ok"] + [
        m.display.label for m in stage.metrics
    ]
    rows: list[list[str]] = []
    for i, row in enumerate(stage.runs):
        cols = [
            "N/A" if "needs_config" in m.flags else shown(m.per_run[i], m.display)
            for m in stage.metrics
        ]
        rows.append(_run_cells(row, stage, cols))
    n_ok = sum(1 for r in stage.runs if r.status == "ok")
    rows.append(
        [f"**Worst-of-{n_ok}**", "—", "—"]
        + [
            f"**{shown(m.worst_raw, m.display)}**" if m.worst_raw is not None else "?"
            for m in stage.metrics
        ]
    )
    return _table(header, rows)


def _stat(
    value: float | None, display: Display, *, extra: int = 0, spread: bool = False
) -> str:
    """A statistic in display units; ``extra`` digits for derived values."""
    if value is None:
        return "n/a"
    scale = abs(display.scale) if spread else display.scale
    return f"{value * scale:.{max(display.digits, 0) + extra}f}"


def _bound(worst: str) -> str:
    return "lower bound" if worst == "min" else "upper bound"


def _thresholds_table(stage: StageReport, repeats: int) -> list[str]:
    ms = stage.metrics
    header = [""] + [m.display.label for m in ms]

    def row(name: str, cells: list[str]) -> list[str]:
        return [name, *cells]

    def value(v: Number | None, m: MetricReport) -> str:
        if v is None:
            return "?"
        return f"{shown(float(v), m.display)} (`{literal(v)}`)"

    rows = [
        row("Median", [_stat(m.summary.median, m.display, extra=1) for m in ms]),
        row("Mean", [_stat(m.summary.mean, m.display, extra=1) for m in ms]),
        row(
            "Stdev",
            [_stat(m.summary.stdev, m.display, extra=1, spread=True) for m in ms],
        ),
        row("CV", [pct(m.summary.cv) for m in ms]),
        row("Min", [_stat(m.summary.min, m.display) for m in ms]),
        row("Max", [_stat(m.summary.max, m.display) for m in ms]),
        row("Threshold", [f"`{m.location.ref}` ({_bound(m.worst)})" for m in ms]),
        row("Current", [value(m.current, m) for m in ms]),
        row("Proposed", [f"{value(m.proposed, m)} ({m.policy})" for m in ms]),
        row("Direction", [direction_text(m.direction, m.delta_pct) for m in ms]),
    ]
    if any(m.now.factor != 1 for m in ms):
        rows.append(
            row(
                "CI enforces",
                [
                    f"×{m.now.factor:g}: {shown(m.now.enforced, m.display)} → "
                    f"{shown(m.after.enforced, m.display)}"
                    for m in ms
                ],
            )
        )
    rows += [
        row(
            "Current fails observed",
            [
                "?"
                if m.now.fails_observed is None
                else f"{m.now.fails_observed} of {len(m.values)}"
                for m in ms
            ],
        ),
        row("False alarm now: distribution-free", [pct(m.now.empirical) for m in ms]),
        row("False alarm now: normal fit", [pct(m.now.normal) for m in ms]),
        row(
            "False alarm proposed: distribution-free",
            [pct(m.after.empirical, bound=m.after.fails_observed == 0) for m in ms],
        ),
        row("False alarm proposed: normal fit", [pct(m.after.normal) for m in ms]),
    ]
    del repeats
    return _table(header, rows)


def _flag_lines(stage: StageReport) -> list[str]:
    lines: list[str] = []
    for m in stage.metrics:
        label = f"{m.display.label} (`{m.key}`)"
        if "needs_config" in m.flags:
            lines.append(f"- {label}: no json_path in stages.yaml; not measured.")
        if "high_noise" in m.flags:
            lines.append(
                f"- **High noise** in {label}: CV {pct(m.summary.cv)} is above "
                f"{pct(m.noise_cv_max)} for group `{m.group}`."
            )
        for k in m.outlier_runs:
            v = m.per_run[[r.run for r in stage.runs].index(k)]
            lines.append(
                f"- **Outlier** in {label}: run {k} ({shown(v, m.display)}) stands "
                "apart from the others (robust z > 3.5, large gap); kept, review it."
            )
        if "current_fails_observed" in m.flags:
            lines.append(
                f"- **Current threshold fails observed runs** in {label}: "
                f"{m.now.fails_observed} of {len(m.values)}."
            )
    return lines


def _stage_lines(n: int, stage: StageReport, data: ReportData) -> list[str]:
    lines = [f"## {n}. {stage.title}", ""]
    where = f"`{stage.key}` · group `{stage.group}` · test `{stage.test}`"
    if stage.threshold_file:
        where += f" (thresholds in `{stage.threshold_file}`)"
    if stage.variant:
        where += f" · variant `{stage.variant}`"
    lines += [where, "", _context_line(stage, data), ""]
    if not stage.known:
        lines += ["> ⚠ This stage is not in the stages.yaml snapshot.", ""]
    lines += [*_runs_table(stage), ""]
    if stage.metrics:
        lines += [*_thresholds_table(stage, data.plan.repeats), ""]
    flags = _flag_lines(stage)
    if flags:
        lines += ["Flags:", "", *flags, ""]
    if stage.plot:
        lines += [f"![{stage.title}: per-run values]({stage.plot})", ""]
    elif data.plot_note and stage.metrics:
        lines += [f"Plot: {data.plot_note}", ""]
    return lines


def _reliability_lines(data: ReportData) -> list[str]:
    header = [
        "Stage",
        "Runs ok",
        "Attempts",
        "Retries",
        "Median run (s)",
        "Max run (s)",
        "Overlaps",
    ]
    rows: list[list[str]] = []
    overlaps: list[str] = []
    for s in data.stages:
        rel = s.reliability
        retries = ", ".join(f"{k} {v}" for k, v in rel.retries.items()) or "—"
        n_over = sum(1 for r in s.runs if r.overlaps)
        rows.append(
            [
                f"`{s.key}`",
                f"{sum(1 for r in s.runs if r.status == 'ok')}/{len(s.runs)}",
                str(rel.attempts),
                retries,
                _seconds(rel.median_duration_s),
                _seconds(rel.max_duration_s),
                str(n_over) if n_over else "—",
            ]
        )
        for r in s.runs:
            if r.overlaps:
                others = ", ".join(f"`{o}`" for o in r.overlaps)
                overlaps.append(f"- `{s.key}#{r.run}` ({r.worker}) overlapped {others}")
    lines = ["## Reliability", ""]
    lines.append(
        f"Workers: {data.plan.workers}. Retries count the attempts whose outcome "
        "was neither ok nor a threshold failure, by class."
    )
    lines += ["", *_table(header, rows), ""]
    if overlaps:
        lines += [
            "Stage-runs of different pytest passes that ran at the same time:",
            "",
        ]
        lines += [*overlaps, ""]
    return lines


def _plots_lines(data: ReportData) -> list[str]:
    lines = ["## Plots", ""]
    plotted = [s for s in data.stages if s.plot]
    if plotted:
        lines += [f"- [{s.title}]({s.plot})" for s in plotted]
    elif data.plot_note:
        lines.append(data.plot_note)
    else:
        lines.append("No stage has values to plot.")
    return [*lines, ""]


def _applied_lines(data: ReportData) -> list[str]:
    rows = [
        [
            f"`{c.stage_key}`",
            f"`{c.ref}`",
            literal(c.old),
            literal(c.new),
            direction_text(c.direction, c.delta_pct),
        ]
        for c in data.applied
    ]
    header = ["Stage", "Source", "Old", "New", "Direction"]
    return ["## Applied changes", "", *_table(header, rows), ""]


def _provenance_lines(data: ReportData) -> list[str]:
    plan = data.plan
    gpu = _gpu(data.precheck)
    dirty = "no"
    if plan.dirty:
        dirty = (
            f"yes, see [{rundir.WORKSPACE_DIFF}]({rundir.WORKSPACE_DIFF})"
            if data.workspace_diff
            else f"yes ({rundir.WORKSPACE_DIFF} missing)"
        )
    lines = [
        "## Provenance",
        "",
        f"- Commit: `{plan.git_sha or '?'}`",
        f"- Branch: `{plan.git_branch or '?'}`",
        f"- Dirty: {dirty}",
    ]
    if plan.equivalent_commits:
        eq = ", ".join(f"`{c}`" for c in plan.equivalent_commits)
        lines.append(f"- Measurement-equivalent commits: {eq}")
    lines += [
        f"- Host: {plan.host or '?'}",
        f"- GPU: {gpu.get('model') or '?'} × {gpu.get('count', '?')}, "
        f"driver {gpu.get('driver') or '?'}",
        f"- Python {plan.python_version or '?'}, pytest {plan.pytest_version or '?'}, "
        f"pytest-tune-ci {plan.plugin_version or '?'}",
    ]
    versions = data.precheck.get("versions")
    if isinstance(versions, dict) and versions:
        listed = ", ".join(f"{k} {versions[k]}" for k in sorted(versions))
        lines.append(f"- Versions checked: {listed}")
    lines += [
        f"- Config sha256: `{plan.config_sha256 or '?'}`",
        f"- Workers: {plan.workers}",
        f"- Started: {plan.started_at or '?'}",
        f"- Finished: {data.finished_at or '?'}",
    ]
    if plan.resumes:
        lines.append(f"- Resumed: {', '.join(plan.resumes)}")
    if plan.logic_hashes:
        lines.append("- Test logic hashes:")
        lines += [f"  - `{f}`: `{h}`" for f, h in sorted(plan.logic_hashes.items())]
    return [*lines, ""]


def render_md(data: ReportData) -> str:
    lines = _header(data)
    for n, stage in enumerate(data.stages, 1):
        lines += _stage_lines(n, stage, data)
    lines += _reliability_lines(data)
    lines += _plots_lines(data)
    if data.applied:
        lines += _applied_lines(data)
    lines += _provenance_lines(data)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# -- report.json ------------------------------------------------------------


def _summary_json(s: Summary) -> dict[str, Any]:
    return asdict(s)


def _rate_json(r: Rate) -> dict[str, Any]:
    return asdict(r)


def _location_json(loc: Location) -> dict[str, Any]:
    return asdict(loc)


def _metric_json(m: MetricReport) -> dict[str, Any]:
    return {
        "metric_key": m.key,
        "label": m.display.label,
        "worst_op": m.worst,
        "digits": m.display.digits,
        "scale": m.display.scale,
        "integer": m.integer,
        "group": m.group,
        "status": m.status,
        "source": m.location.source,
        "ref": m.location.ref,
        "source_kind": "bare" if m.location.inner_key is None else "nested",
        "location": _location_json(m.location),
        "threshold_id": m.threshold_id,
        "per_run_raw": m.values,
        "per_run": m.per_run,
        "worst_raw": m.worst_raw,
        "stats": _summary_json(m.summary),
        "current_raw": m.current,
        "policy": m.policy,
        "write_value": m.proposed,
        "proposed": m.proposed,
        "direction": m.direction,
        "delta_pct": m.delta_pct,
        "ci_slack": m.now.factor,
        "false_alarm_current": _rate_json(m.now),
        "false_alarm_new": _rate_json(m.after),
        "current_fails_observed": m.now.fails_observed,
        "noise_cv_max": m.noise_cv_max,
        "flags": m.flags,
    }


def _run_json(r: RunRow) -> dict[str, Any]:
    return {
        "run": r.run,
        "status": r.status,
        "reason": r.reason,
        "samples_total": r.samples_total,
        "samples_ok": r.samples_ok,
        "metrics": r.metrics,
        "attempts": r.attempts,
        "duration_s": r.duration_s,
        "worker": r.worker,
        "gpus": r.gpus,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "overlaps": r.overlaps,
    }


def _stage_json(s: StageReport, data: ReportData) -> dict[str, Any]:
    rel = s.reliability
    return {
        "stage_key": s.key,
        "title": s.title,
        "group": s.group,
        "test": s.test,
        "threshold_file": s.threshold_file,
        "variant": s.variant,
        "concurrency": s.concurrency,
        "context": s.context,
        "gpus": {"model": _gpu(data.precheck).get("model"), "count": s.gpus},
        "known": s.known,
        "plot": s.plot,
        "runs": [_run_json(r) for r in s.runs],
        "metrics": [_metric_json(m) for m in s.metrics],
        "reliability": {
            "attempts": rel.attempts,
            "retries": rel.retries,
            "median_duration_s": rel.median_duration_s,
            "max_duration_s": rel.max_duration_s,
            "overlaps": [f"{s.key}#{r.run}: {o}" for r in s.runs for o in r.overlaps],
        },
    }


def to_json(data: ReportData) -> dict[str, Any]:
    plan = data.plan
    c = data.completeness
    return {
        "schema": SCHEMA,
        "model": plan.model,
        "run_dir": data.run_dir,
        "repeats": plan.repeats,
        "partial": data.partial,
        "complete": {"ok": c.ok, "total": c.total},
        "missing": [
            {"stage": m.stage, "run": m.run, "reason": m.reason} for m in c.missing
        ],
        "git_sha": plan.git_sha,
        "git_branch": plan.git_branch,
        "dirty": plan.dirty,
        "started_at": plan.started_at,
        "finished_at": data.finished_at,
        "provenance": {
            "host": plan.host,
            "gpu": _gpu(data.precheck),
            "python_version": plan.python_version,
            "pytest_version": plan.pytest_version,
            "plugin_version": plan.plugin_version,
            "config_sha256": plan.config_sha256,
            "workers": plan.workers,
            "equivalent_commits": plan.equivalent_commits,
            "resumes": plan.resumes,
            "logic_hashes": plan.logic_hashes,
            "workspace_diff": rundir.WORKSPACE_DIFF if data.workspace_diff else None,
        },
        "stages": [_stage_json(s, data) for s in data.stages],
        "summary": [
            {
                "stage_key": s.key,
                "threshold_id": m.threshold_id,
                "ref": m.location.ref,
                "current": m.current,
                "proposed": m.proposed,
                "direction": m.direction,
                "delta_pct": m.delta_pct,
            }
            for s, m in data.changes
        ],
        "applied": [c.record for c in data.applied],
        "plots_note": data.plot_note,
    }


# -- writing ----------------------------------------------------------------


def _write_plots(run_dir: Path, data: ReportData) -> None:
    from . import plot

    if not plot.available():
        data.plot_note = f"Plots need matplotlib: `{PLOT_HINT}`."
        return
    for stage in data.stages:
        series = [
            plot.Series(
                label=m.display.label,
                values=[None if v is None else v * m.display.scale for v in m.per_run],
                current=None if m.current is None else m.current * m.display.scale,
                proposed=None if m.proposed is None else m.proposed * m.display.scale,
            )
            for m in stage.metrics
            if m.values
        ]
        if not series:
            continue
        png = plot.stage_png(stage.title, [r.run for r in stage.runs], series)
        rel = f"{PLOTS_DIR}/{stage.key}.png"
        atomic.write_bytes(run_dir / rel, png)
        stage.plot = rel


def _refusal(run_dir: Path, c: Completeness) -> list[str]:
    lines = [
        f"report refused: {run_dir} is incomplete "
        f"({c.ok} of {c.total} stage-runs complete); missing:"
    ]
    lines += [
        f"  {m.stage} run{m.run}: {m.reason}" for m in c.missing[:MAX_MISSING_LINES]
    ]
    if len(c.missing) > MAX_MISSING_LINES:
        lines.append(f"  ... and {len(c.missing) - MAX_MISSING_LINES} more")
    lines.append(
        f"finish it with: pytest --tune-resume {run_dir}; or write a partial report "
        f"with: pytest --tune-report {run_dir} --tune-report-partial"
    )
    return lines


def write_report(run_dir: Path, *, partial: bool = False) -> ReportResult:
    """Write report.md, report.json and plots/ for ``run_dir``.

    Refuses (exit 1) a run dir with missing or incomplete stage-runs unless
    ``partial``, which writes the report under a PARTIAL banner.
    """
    data = build_report(run_dir)
    where = Path(data.run_dir)
    if data.partial and not partial:
        return ReportResult(1, _refusal(where, data.completeness), None)
    _write_plots(where, data)
    atomic.write_json(where / rundir.REPORT_JSON, to_json(data))
    md_path = where / rundir.REPORT_MD
    atomic.write_text(md_path, render_md(data))
    lines = [f"{'PARTIAL report' if data.partial else 'report'}: {md_path}"]
    changes = len(data.changes)
    if data.partial:
        lines.append(f"{changes} change(s) shown; a partial report is never applied")
    elif changes:
        lines.append(
            f"{changes} threshold change(s) proposed; apply with: "
            f"pytest --tune-apply {where}"
        )
    else:
        lines.append("no threshold changes proposed")
    summary = os.environ.get(SUMMARY_ENV)
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(_summary_md(data) + "\n")
        except OSError as exc:
            lines.append(f"could not append to {SUMMARY_ENV} ({summary}): {exc}")
    return ReportResult(0, lines, md_path)


__all__ = [
    "ReportData",
    "ReportResult",
    "build_report",
    "render_md",
    "summary_table_md",
    "to_json",
    "write_report",
]
