"""report.md, report.json and the plots of one run directory.

The data is built in ``report_data``, rendered by ``report_md`` and
``report_json``; this module writes the files. report.json is the input of
``--tune-apply-plan``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import atomic
from . import rundir
from .report_data import MAX_MISSING_LINES
from .report_data import PLOT_HINT
from .report_data import PLOTS_DIR
from .report_data import SUMMARY_ENV
from .report_data import ReportData
from .report_data import ReportResult
from .report_data import build_report
from .report_json import to_json
from .report_md import render_md
from .report_md import summary_md
from .report_md import summary_table_md
from .rundir import Completeness


# -- writing ----------------------------------------------------------------


def _write_plots(run_dir: Path, data: ReportData) -> None:
    from . import plot

    if not plot.available():
        data.plot_note = f"Plots need matplotlib: `{PLOT_HINT}`."
        return
    jobs = []
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
        if series:
            rel = f"{PLOTS_DIR}/{stage.key}.png"
            runs = [r.run for r in stage.runs]
            jobs.append(plot.Job(str(run_dir / rel), stage.title, runs, series))
    failed = plot.draw_all(jobs)
    if failed is not None:
        data.plot_note = f"No plots: {failed}."
        return
    drawn = {job.path for job in jobs}
    for stage in data.stages:
        rel = f"{PLOTS_DIR}/{stage.key}.png"
        if str(run_dir / rel) in drawn:
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
                fh.write(summary_md(data) + "\n")
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
