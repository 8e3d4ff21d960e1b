"""The run directory: layout, plan, stage-run records and completeness.

Everything a report, an apply or a resume needs is read back from here, so a
run that finished on another machine works the same as a live one. Every file
is written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from . import atomic
from .errors import RunError


PLAN = "plan.json"
PRECHECK = "precheck.json"
RUN_LOG = "run.log"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
APPLIED = "applied.json"
PYTEST_DIR = "_pytest"
STAGES_SNAPSHOT = "stages.yaml"  # the selected stages, as planned
CONFIG_SNAPSHOT = "config.yaml"  # the model config, as planned
WORKSPACE_DIFF = "workspace.diff"
ACTIVITY = "activity.json"  # what the calibration is doing right now


@dataclass
class Plan:
    """What a calibration set out to do; immutable once written."""

    model: str
    stages: list[str]
    repeats: int
    git_sha: str | None
    git_branch: str | None
    dirty: bool
    logic_hashes: dict[str, str]  # test file -> logic hash at plan time
    plugin_version: str
    started_at: str
    stages_yaml: str
    config_sha256: str = ""
    rootdir: str = ""
    equivalent_commits: list[str] = field(default_factory=list)
    resumes: list[str] = field(default_factory=list)  # UTC times of each resume
    precheck: dict[str, Any] | None = None
    finished_at: str | None = None
    host: str = ""
    python_version: str = ""
    pytest_version: str = ""
    workers: int = 1  # xdist workers (1 for a serial run)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Plan:
        try:
            plan = cls(**data)
        except TypeError as exc:
            raise RunError(f"{source}: not a pytest-tune-ci plan ({exc})") from None
        plan._check(source)
        return plan

    def _check(self, source: str) -> None:
        """Refuse a plan whose fields have the wrong types (a hand edit)."""
        expected: dict[str, tuple[type, ...]] = {
            "model": (str,),
            "stages": (list,),
            "repeats": (int,),
            "dirty": (bool,),
            "logic_hashes": (dict,),
            "plugin_version": (str,),
            "started_at": (str,),
            "equivalent_commits": (list,),
            "resumes": (list,),
            "workers": (int,),
        }
        for name, types in expected.items():
            value = getattr(self, name)
            if not isinstance(value, types) or (
                types == (int,) and isinstance(value, bool)
            ):
                raise RunError(
                    f"{source}: {name}: expected {types[0].__name__}, "
                    f"got {type(value).__name__}"
                )
        if not all(isinstance(s, str) for s in self.stages) or not self.stages:
            raise RunError(f"{source}: stages: expected a non-empty list of stage keys")
        if self.repeats < 1:
            raise RunError(f"{source}: repeats: expected a positive integer")


@dataclass
class Attempt:
    outcome: str  # ok|threshold|oom|killed|segfault|crash|timeout|gpu_not_clear|error
    reason: str
    duration_s: float
    gpus: list[int] = field(default_factory=list)
    started_at: str = ""


@dataclass
class StageRun:
    """``<run-dir>/<stage>/run{k}.json``: one stage observed in one repeat."""

    stage: str
    run: int
    status: str  # "ok" when complete, else "incomplete" or "failed"
    reason: str
    outcome: str  # class of the last attempt
    metrics: dict[str, float | None]
    sample_counts: dict[str, int | None]
    attempts: list[Attempt]
    duration_s: float
    started_at: str
    finished_at: str
    git_sha: str | None
    test_logic_sha256: str
    basetemp: str
    log: str
    worker: str = "main"
    gpus: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tests: dict[str, int] = field(default_factory=dict)  # outcome -> count

    @property
    def complete(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageRun:
        attempts = [Attempt(**a) for a in data.get("attempts", [])]
        values = {k: v for k, v in data.items() if k != "attempts"}
        return cls(attempts=attempts, **values)


def stage_run_path(run_dir: Path, stage: str, k: int) -> Path:
    return run_dir / stage / f"run{k}.json"


def pytest_dir(run_dir: Path, test_stem: str) -> Path:
    return run_dir / PYTEST_DIR / test_stem


def basetemp_path(run_dir: Path, test_stem: str, k: int) -> Path:
    return pytest_dir(run_dir, test_stem) / f"basetemp_run{k}"


def log_path(run_dir: Path, test_stem: str, k: int) -> Path:
    return pytest_dir(run_dir, test_stem) / f"run{k}.log"


def write_plan(run_dir: Path, plan: Plan) -> None:
    atomic.write_json(run_dir / PLAN, plan.to_json())


def read_plan(run_dir: Path) -> Plan:
    path = run_dir / PLAN
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: no plan.json; not a calibration run dir") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable plan ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return Plan.from_json(data, str(path))


def write_stage_run(run_dir: Path, record: StageRun) -> None:
    atomic.write_json(
        stage_run_path(run_dir, record.stage, record.run), record.to_json()
    )


def read_stage_run(run_dir: Path, stage: str, k: int) -> StageRun | None:
    """The record, or None when it is missing or unreadable (never complete)."""
    path = stage_run_path(run_dir, stage, k)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return None
        return StageRun.from_json(data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


@dataclass
class Missing:
    stage: str
    run: int
    reason: str


@dataclass
class Completeness:
    ok: int
    total: int
    missing: list[Missing]

    @property
    def complete(self) -> bool:
        return self.ok == self.total


def completeness(run_dir: Path, plan: Plan) -> Completeness:
    """Check every planned stage-run against what is on disk."""
    missing: list[Missing] = []
    ok = 0
    for stage in plan.stages:
        for k in range(1, plan.repeats + 1):
            path = stage_run_path(run_dir, stage, k)
            if not path.exists():
                missing.append(Missing(stage, k, "missing file"))
                continue
            record = read_stage_run(run_dir, stage, k)
            if record is None:
                missing.append(Missing(stage, k, "corrupt json"))
            elif not record.complete:
                missing.append(Missing(stage, k, record.reason or record.status))
            else:
                ok += 1
    return Completeness(ok, len(plan.stages) * plan.repeats, missing)


def append_log(run_dir: Path, line: str) -> None:
    """Append one line to run.log (never truncated, across resumes too)."""
    with open(run_dir / RUN_LOG, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
