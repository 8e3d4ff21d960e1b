"""Open a calibration: load the model and stages, then create or resume a run.

A new run gets a run directory with an immutable plan and snapshots of the
stages and config it was planned from, so that the report, apply and resume
read what the run really used. A resume checks that nothing it depends on
changed: same plan, same test logic.
"""

from __future__ import annotations

import ast
import platform
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
from pathlib import Path

import pytest

from . import __version__
from . import atomic
from . import gitinfo
from . import rundir
from .config import ModelConfig
from .config import load_config_file
from .config import load_model
from .discover import check_fresh
from .discover import discover_model
from .discover import discover_stages
from .errors import RunError
from .errors import TuneError
from .logic import file_locations
from .logic import logic_hash
from .settings import Settings
from .stages import Location
from .stages import Stage
from .stages import dump_stages
from .stages import load_stages
from .stages import select


STATE_DIR = "_state"


@dataclass
class Opened:
    model: ModelConfig
    stages: dict[str, Stage]  # the planned (or selectable) stages, plan order
    notes: list[str]  # what the terminal should say about how it opened
    run_dir: Path | None = None  # known up front for a resume
    plan: rundir.Plan | None = None


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_new(settings: Settings, rootdir: Path) -> Opened:
    assert settings.model is not None
    model = load_model(settings.models_dir, settings.model, rootdir)
    notes: list[str] = []
    if not model.stages_path.exists():
        # Refuse a bad selection before anything is written.
        found, _problems = discover_stages(model, rootdir)
        select(found, settings.stages)
        result = discover_model(model, rootdir)
        notes.append(f"no stages.yaml for {model.name} yet: ran discovery first")
        notes.extend(result.summary_lines)
    stages = load_stages(model.stages_path)
    _check_test_files(stages, rootdir)
    stale = check_fresh(stages, rootdir)
    if stale:
        raise TuneError(
            f"{model.stages_path} is stale: the logic of "
            + ", ".join(stale)
            + f" changed since discovery; run pytest --tune-model {model.name} "
            "--tune-discover and review the stages before calibrating"
        )
    chosen = select(stages, settings.stages)
    return Opened(model, {key: stages[key] for key in chosen}, notes)


def _check_test_files(stages: dict[str, Stage], rootdir: Path) -> None:
    """A missing or unparsable test file is named as such, not as stale."""
    for test in sorted({s.test for s in stages.values()}):
        path = rootdir / test
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TuneError(
                f"{test}: test file missing (named by the stages of this model); "
                "restore it or discover again"
            ) from None
        except OSError as exc:
            raise TuneError(f"{test}: unreadable test file ({exc})") from None
        try:
            ast.parse(source, filename=test)
        except SyntaxError as exc:
            raise TuneError(
                f"{test}:{exc.lineno}: cannot parse test file: {exc.msg}"
            ) from None


def current_logic_hashes(
    stages: dict[str, Stage], rootdir: Path
) -> dict[str, str | None]:
    """Logic hash of each test file of ``stages`` as the file is now."""
    locations = file_locations(stages.values())
    hashes: dict[str, str | None] = {}
    for test in sorted({s.test for s in stages.values()}):
        path = rootdir / test
        try:
            source = path.read_text(encoding="utf-8")
            hashes[test] = logic_hash(source, locations.get(test, []))
        except (OSError, SyntaxError, ValueError):
            hashes[test] = None
    return hashes


def default_run_dir(settings: Settings, model: str, repeats: int) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return settings.output_root / f"{stamp}_{model}_r{repeats}"


def refresh_currents(stages: dict[str, Stage], rootdir: Path) -> dict[str, Stage]:
    """Record each threshold's value as the file has it now, at plan time."""
    from dataclasses import replace

    from .literals import read_values

    by_file: dict[str, list[Location]] = {}
    for stage in stages.values():
        for metric in stage.metrics.values():
            by_file.setdefault(metric.location.file, []).append(metric.location)
    values: dict[tuple[str, Location], float | int | None] = {}
    for file, locs in by_file.items():
        try:
            read = read_values((rootdir / file).read_text(encoding="utf-8"), locs)
        except (OSError, SyntaxError, ValueError):
            read = {}
        for loc in locs:
            values[(file, loc)] = read.get(loc)
    fresh: dict[str, Stage] = {}
    for key, stage in stages.items():
        metrics = {
            name: replace(m, current=values.get((m.location.file, m.location)))
            for name, m in stage.metrics.items()
        }
        fresh[key] = replace(stage, metrics=metrics)
    return fresh


# What a calibration killed before its plan was written can leave behind; a
# directory holding anything else is someone else's and is never written to.
_BEFORE_PLAN = {
    rundir.PRECHECK,
    rundir.STAGES_SNAPSHOT,
    rundir.CONFIG_SNAPSHOT,
    rundir.WORKSPACE_DIFF,
    ".tune-write-check",
}


def check_new_run_dir(run_dir: Path, protected: list[Path] | None = None) -> None:
    """Refuse a directory that already holds a plan, and one we cannot write."""
    if (run_dir / rundir.PLAN).exists():
        raise TuneError(
            f"{run_dir} already holds a calibration plan; resume it with "
            f"--tune-resume {run_dir}, or choose another --tune-output-dir"
        )
    target = run_dir.resolve()
    for path in protected or []:
        if path.resolve().is_relative_to(target):
            raise TuneError(
                f"--tune-output-dir {run_dir}: the run dir would hold {path}; "
                "choose an empty or new directory"
            )
    if run_dir.is_dir():
        foreign = sorted(
            p.name
            for p in run_dir.iterdir()
            if p.name not in _BEFORE_PLAN and not p.name.endswith(atomic.TMP_SUFFIX)
        )
        if foreign:
            raise TuneError(
                f"--tune-output-dir {run_dir}: not empty (holds "
                f"{', '.join(foreign[:5])}); choose an empty or new directory"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".tune-write-check"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise TuneError(f"{run_dir}: cannot write the run directory ({exc})") from None


def protected_paths(opened: Opened, rootdir: Path) -> list[Path]:
    """Files a run dir must never contain: the model's and the tests'."""
    paths = [opened.model.path, opened.model.stages_path]
    paths += [rootdir / s.test for s in opened.stages.values()]
    return paths


def create_run(
    run_dir: Path,
    opened: Opened,
    settings: Settings,
    rootdir: Path,
    *,
    workers: int,
    precheck: dict[str, object] | None,
) -> rundir.Plan:
    check_new_run_dir(run_dir, protected_paths(opened, rootdir))
    stages = refresh_currents(opened.stages, rootdir)
    git = gitinfo.state(rootdir)
    hashes = current_logic_hashes(stages, rootdir)
    plan = rundir.Plan(
        model=opened.model.name,
        stages=list(stages),
        repeats=settings.repeats,
        git_sha=git.sha,
        git_branch=git.branch,
        dirty=git.dirty,
        logic_hashes={k: v or "" for k, v in hashes.items()},
        plugin_version=__version__,
        started_at=utc_stamp(),
        stages_yaml=str(opened.model.stages_path),
        config_sha256=opened.model.raw_sha256,
        rootdir=str(rootdir),
        precheck=precheck,
        host=socket.gethostname(),
        python_version=platform.python_version(),
        pytest_version=pytest.__version__,
        workers=workers,
    )
    atomic.write_text(run_dir / rundir.STAGES_SNAPSHOT, dump_stages(stages))
    shutil.copyfile(opened.model.path, run_dir / rundir.CONFIG_SNAPSHOT)
    if git.dirty:
        atomic.write_text(run_dir / rundir.WORKSPACE_DIFF, gitinfo.diff(rootdir))
    # The plan goes last: a run dir without one is not a run yet.
    rundir.write_plan(run_dir, plan)
    rundir.append_log(
        run_dir, f"{plan.started_at} plan: {len(plan.stages)} stage(s) x {plan.repeats}"
    )
    return plan


def open_resume(settings: Settings, rootdir: Path) -> Opened:
    assert settings.resume is not None
    run_dir = settings.resume
    plan = rundir.read_plan(run_dir)
    if settings.model is not None and settings.model != plan.model:
        raise TuneError(
            f"--tune-model {settings.model} conflicts with the plan of {run_dir} "
            f"(model {plan.model})"
        )
    if settings.repeats_given and settings.repeats != plan.repeats:
        raise TuneError(
            f"--tune-repeats {settings.repeats} conflicts with the plan of "
            f"{run_dir} ({plan.repeats} repeats); the plan is immutable"
        )
    try:
        stages = load_stages(run_dir / rundir.STAGES_SNAPSHOT)
        model = load_config_file(run_dir / rundir.CONFIG_SNAPSHOT, rootdir)
    except TuneError as exc:
        raise RunError(f"cannot resume {run_dir}: {exc}") from None
    if settings.stages != "ALL":
        try:
            select(stages, settings.stages)
        except TuneError:
            raise TuneError(
                f"--tune-stages {settings.stages}: stages outside the plan of "
                f"{run_dir} (planned: {', '.join(plan.stages)}); a resume runs "
                "the plan it started with"
            ) from None
    now = current_logic_hashes(stages, rootdir)
    changed = [t for t, h in now.items() if h != plan.logic_hashes.get(t)]
    if changed:
        raise RunError(
            f"cannot resume {run_dir}: the test logic changed since calibration "
            f"started in {', '.join(changed)}"
        )
    notes = []
    git = gitinfo.state(rootdir)
    if git.sha and plan.git_sha and git.sha != plan.git_sha:
        if git.sha not in plan.equivalent_commits:
            plan.equivalent_commits.append(git.sha)
        notes.append(
            f"HEAD moved from {plan.git_sha[:10]} to {git.sha[:10]}; the test logic "
            "is unchanged, so the runs stay comparable"
        )
    removed = atomic.remove_stale_temps(run_dir)
    if removed:
        notes.append(f"removed {removed} half-written temp file(s)")
    shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    plan.resumes.append(utc_stamp())
    rundir.write_plan(run_dir, plan)
    rundir.append_log(run_dir, f"{plan.resumes[-1]} resume")
    ordered = {k: stages[k] for k in plan.stages if k in stages}
    missing = [k for k in plan.stages if k not in stages]
    if missing:
        raise RunError(
            f"{run_dir}/{rundir.STAGES_SNAPSHOT}: planned stages missing: {missing}"
        )
    return Opened(model, ordered, notes, run_dir=run_dir, plan=plan)


__all__ = ["Opened", "create_run", "default_run_dir", "open_new", "open_resume"]
