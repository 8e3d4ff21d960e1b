"""report.json: everything in the report as data (input of apply)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from . import rundir
from .report_data import SCHEMA
from .report_data import MetricReport
from .report_data import Rate
from .report_data import ReportData
from .report_data import RunRow
from .report_data import StageReport
from .report_data import _gpu
from .stages import Location
from .stats import Summary


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
