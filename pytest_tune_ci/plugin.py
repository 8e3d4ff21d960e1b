"""pytest entry point: options, ini keys, and the switch that turns tuning on.

This module stays thin. It validates options into :class:`Settings`, runs the
no-test commands (listing, discovery, status, report, apply, precheck) from
``pytest_cmdline_main``, and registers the calibration session object only
when a calibration was asked for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .errors import RunError
from .errors import TuneError
from .settings import APPLY_MODES
from .settings import Settings
from .settings import positive_int


GROUP = "tune-ci"
PLUGIN_NAME = "tune-ci-session"
DEFAULT_REPEATS = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "threshold calibration (pytest-tune-ci)")
    add = group.addoption
    add("--tune-model", metavar="NAME", help="Calibrate the model models/NAME")
    add(
        "--tune-repeats",
        metavar="N",
        type=positive_int,
        default=None,
        help=f"Repeats of each selected stage (default {DEFAULT_REPEATS})",
    )
    add(
        "--tune-stages",
        metavar="SPEC",
        default="ALL",
        help="Comma-separated stage keys, bases or @groups (default ALL)",
    )
    add(
        "--tune-output-dir",
        metavar="DIR",
        help="Run directory (default <rootdir>/<tune_output_root>/<ts>_<model>_rN)",
    )
    add("--tune-resume", metavar="DIR", help="Complete an interrupted calibration")
    add(
        "--tune-max-attempts",
        metavar="N",
        type=positive_int,
        default=4,
        help="Attempts per stage-run on infrastructure failures (default 4)",
    )
    add(
        "--tune-max-passes",
        metavar="N",
        type=positive_int,
        default=10,
        help="Passes over incomplete stage-runs (default 10)",
    )
    add("--tune-models-list", action="store_true", help="List the models and exit")
    add(
        "--tune-stages-list",
        action="store_true",
        help="List the stages of --tune-model and exit",
    )
    add(
        "--tune-discover",
        action="store_true",
        help="Write models/NAME/stages.yaml from the test files and exit",
    )
    add(
        "--tune-status",
        metavar="DIR",
        help="Print the progress of a run directory as JSON and exit",
    )
    add(
        "--tune-gpus",
        metavar="BACKEND",
        help="GPU backend: nvml, none or sim:PATH (default: nvml when present)",
    )
    add(
        "--tune-precheck",
        action="store_true",
        help="Check versions, caches and GPUs for --tune-model and exit",
    )
    add(
        "--tune-skip-precheck",
        action="store_true",
        help="Start a calibration without the precheck",
    )
    add("--tune-report", metavar="DIR", help="Write report.md for DIR and exit")
    add(
        "--tune-report-partial",
        action="store_true",
        help="Allow a report of an incomplete run (marked PARTIAL)",
    )
    add(
        "--tune-apply-plan",
        metavar="DIR",
        help="Print what --tune-apply would write, as JSON, and exit",
    )
    add("--tune-apply", metavar="DIR", help="Write the calibrated thresholds and exit")
    add(
        "--tune-apply-mode",
        choices=APPLY_MODES,
        default="smart",
        help="report: diff only; smart: ask for risky changes; full: apply all",
    )
    add(
        "--tune-apply-answers",
        metavar="FILE",
        help="YAML answers (threshold id: keep|apply|number) for smart mode",
    )
    parser.addini(
        "tune_models_dir",
        "Directory holding models/<name>/ (relative to rootdir)",
        default="models",
    )
    parser.addini(
        "tune_output_root",
        "Where run directories go (relative to rootdir)",
        default=".tune-runs",
    )
    parser.addini("tune_gpus", "Default GPU backend (nvml, none, sim:PATH)")


def _path(value: object, base: Path, option: str) -> Path | None:
    if value is None:
        return None
    if not str(value).strip():
        raise pytest.UsageError(f"{option}: expected a path, got an empty value")
    path = Path(str(value))
    return path if path.is_absolute() else base / path


def read_settings(config: pytest.Config) -> Settings:
    opt = config.option
    root = config.rootpath
    cwd = config.invocation_params.dir
    repeats = opt.tune_repeats
    gpus = opt.tune_gpus or os.environ.get("TUNE_CI_GPUS") or None
    if gpus is None:
        ini = str(config.getini("tune_gpus") or "").strip()
        gpus = ini or None
    return Settings(
        model=opt.tune_model,
        repeats=repeats if repeats is not None else DEFAULT_REPEATS,
        repeats_given=repeats is not None,
        stages=opt.tune_stages,
        output_dir=_path(opt.tune_output_dir, cwd, "--tune-output-dir"),
        resume=_path(opt.tune_resume, cwd, "--tune-resume"),
        max_attempts=opt.tune_max_attempts,
        max_passes=opt.tune_max_passes,
        models_list=opt.tune_models_list,
        stages_list=opt.tune_stages_list,
        discover=opt.tune_discover,
        status=_path(opt.tune_status, cwd, "--tune-status"),
        gpus=gpus,
        precheck=opt.tune_precheck,
        skip_precheck=opt.tune_skip_precheck,
        report=_path(opt.tune_report, cwd, "--tune-report"),
        report_partial=opt.tune_report_partial,
        apply_plan=_path(opt.tune_apply_plan, cwd, "--tune-apply-plan"),
        apply=_path(opt.tune_apply, cwd, "--tune-apply"),
        apply_mode=opt.tune_apply_mode,
        apply_answers=_path(opt.tune_apply_answers, cwd, "--tune-apply-answers"),
        models_dir=root / str(config.getini("tune_models_dir")),
        output_root=root / str(config.getini("tune_output_root")),
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    settings = read_settings(config)
    command = settings.command
    if command is None or _is_worker(config):
        return None
    from . import commands

    try:
        return commands.run(command, settings, config)
    except RunError as exc:
        # Refused on the state of a run (not on the options): exit code 1.
        sys.stderr.write(f"ERROR: {exc}\n")
        return 1
    except TuneError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    settings = read_settings(config)
    config.stash[settings_key] = settings
    if not settings.calibrating:
        return
    from .loops import SerialLoop
    from .loops import WorkerLoop
    from .session import CalibrationPlugin

    try:
        plugin = CalibrationPlugin(config, settings)
    except RunError as exc:
        pytest.exit(f"ERROR: {exc}", returncode=1)
    except TuneError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    if plugin.is_worker:
        config.pluginmanager.register(WorkerLoop(plugin), f"{PLUGIN_NAME}-loop")
    elif not plugin.is_controller:
        config.pluginmanager.register(SerialLoop(plugin), f"{PLUGIN_NAME}-loop")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` in a calibration: one worker per group of free GPUs."""
    settings = read_settings(config)
    if not settings.calibrating or settings.model is None:
        return None
    from .config import load_model
    from .gpu import GpuPool
    from .gpu import auto_workers
    from .gpu import make_backend

    try:
        model = load_model(settings.models_dir, settings.model, config.rootpath)
        backend = make_backend(settings.gpus, base=config.rootpath)
        pool = GpuPool.from_env(model.gpu_exclude)
    except TuneError:
        return None  # the calibration itself reports the problem
    per_test = max([model.gpus_default, *model.gpus_per_test.values()])
    return auto_workers(backend, pool, per_test, model.gpu_free_mib)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Run directories hold copies of results and logs, never tests.
    settings = config.stash.get(settings_key, None)
    if settings is None:
        return None
    roots = [settings.output_root, settings.output_dir, settings.resume]
    for root in roots:
        if root is not None and collection_path.is_relative_to(root):
            return True
    return None


settings_key = pytest.StashKey[Settings]()

__all__ = ["pytest_addoption", "pytest_cmdline_main", "pytest_configure"]
