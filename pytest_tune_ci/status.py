"""``--tune-status``: the progress of a run directory as one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import rundir
from .planning import STATE_DIR


def _activity(run_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((run_dir / STATE_DIR).glob("activity-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


def status_json(run_dir: Path) -> dict[str, Any]:
    plan = rundir.read_plan(run_dir)
    done = rundir.completeness(run_dir, plan)
    per_stage: dict[str, dict[str, int]] = {}
    for stage in plan.stages:
        per_stage[stage] = {"ok": 0, "total": plan.repeats}
    missing_keys = {(m.stage, m.run) for m in done.missing}
    for stage in plan.stages:
        for k in range(1, plan.repeats + 1):
            if (stage, k) not in missing_keys:
                per_stage[stage]["ok"] += 1
    halt = run_dir / STATE_DIR / "halt.json"
    stopped = None
    if halt.exists():
        try:
            stopped = json.loads(halt.read_text(encoding="utf-8")).get("reason")
        except (OSError, ValueError):
            stopped = "unreadable halt record"
    return {
        "run_dir": str(run_dir),
        "model": plan.model,
        "repeats": plan.repeats,
        "complete": done.complete,
        "ok": done.ok,
        "total": done.total,
        "missing": [
            {"stage": m.stage, "run": m.run, "reason": m.reason} for m in done.missing
        ],
        "stages": per_stage,
        "activity": [] if done.complete else _activity(run_dir),
        "stopped": stopped,
        "started_at": plan.started_at,
        "finished_at": plan.finished_at,
    }
