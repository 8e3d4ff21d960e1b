"""report.md: the reviewer's view of a run's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import rundir
from .report_data import RATES_LEGEND
from .report_data import MetricReport
from .report_data import Rate
from .report_data import ReportData
from .report_data import RunRow
from .report_data import StageReport
from .report_data import _gpu
from .report_data import build_report
from .stages import Display
from .stats import Number


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
    return summary_md(data)


def summary_md(data: ReportData) -> str:
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
