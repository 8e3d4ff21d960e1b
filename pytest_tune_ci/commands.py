"""The no-test commands: they print, write files, and return an exit code.

Each runs from ``pytest_cmdline_main`` (like ``--fixtures``), so no test is
collected or run. Output goes through pytest's terminal writer; the machine
interfaces (``--tune-status``, ``--tune-apply-plan``) write exactly one JSON
object to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from _pytest.config import create_terminal_writer

from .errors import TuneError
from .settings import Settings


Writer = Callable[[str], None]


def _writer(config: pytest.Config) -> Writer:
    tw = create_terminal_writer(config, sys.stdout)

    def line(text: str) -> None:
        tw.line(text)

    return line


def _json_out(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def _require_model(settings: Settings, flag: str) -> str:
    if settings.model is None:
        raise TuneError(f"{flag} needs --tune-model NAME")
    return settings.model


def run(command: str, settings: Settings, config: pytest.Config) -> int:
    handler = _COMMANDS[command]
    return handler(settings, config)


def _models_list(settings: Settings, config: pytest.Config) -> int:
    from .config import list_models

    out = _writer(config)
    models = list_models(settings.models_dir)
    if not models:
        out(f"no models under {settings.models_dir}")
        return 0
    for name in models:
        out(name)
    return 0


def _load(settings: Settings, config: pytest.Config, flag: str) -> Any:
    from .config import load_model

    name = _require_model(settings, flag)
    return load_model(settings.models_dir, name, config.rootpath)


def _stages_list(settings: Settings, config: pytest.Config) -> int:
    from .stages import format_list
    from .stages import load_stages

    model = _load(settings, config, "--tune-stages-list")
    path = model.stages_path
    if not path.exists():
        raise TuneError(
            f"{path}: no stages.yaml yet; run "
            f"pytest --tune-model {model.name} --tune-discover"
        )
    out = _writer(config)
    for text in format_list(load_stages(path)):
        out(text)
    return 0


def _discover(settings: Settings, config: pytest.Config) -> int:
    from .discover import discover_model

    model = _load(settings, config, "--tune-discover")
    out = _writer(config)
    result = discover_model(model, config.rootpath)
    for text in result.summary_lines:
        out(text)
    return 0


def _status(settings: Settings, config: pytest.Config) -> int:
    from .status import status_json

    assert settings.status is not None
    data = status_json(settings.status)
    _json_out(data)
    return 0 if data["complete"] else 1


def _report(settings: Settings, config: pytest.Config) -> int:
    from .report import write_report

    assert settings.report is not None
    result = write_report(settings.report, partial=settings.report_partial)
    if result.exit_code != 0:
        # A refusal reads like every other refusal: one ERROR line on stderr.
        sys.stderr.write("ERROR: " + "\n  ".join(result.lines) + "\n")
        return result.exit_code
    out = _writer(config)
    for text in result.lines:
        out(text)
    return 0


def _apply_plan(settings: Settings, config: pytest.Config) -> int:
    from .apply import build_plan

    assert settings.apply_plan is not None
    _json_out(build_plan(settings.apply_plan, config.rootpath))
    return 0


def _apply(settings: Settings, config: pytest.Config) -> int:
    from .apply import run_apply

    assert settings.apply is not None
    out = _writer(config)
    return run_apply(
        settings.apply,
        config.rootpath,
        mode=settings.apply_mode,
        answers=settings.apply_answers,
        interactive=sys.stdin.isatty() and sys.stdout.isatty(),
        out=out,
    )


def _precheck(settings: Settings, config: pytest.Config) -> int:
    from .gpu import make_backend
    from .precheck import run_precheck
    from .stages import load_stages
    from .stages import select

    model = _load(settings, config, "--tune-precheck")
    out = _writer(config)
    stages = load_stages(model.stages_path) if model.stages_path.exists() else {}
    chosen = [stages[key] for key in select(stages, settings.stages)] if stages else []
    backend = make_backend(settings.gpus, out)
    result = run_precheck(
        model, chosen, config.rootpath, backend, out_dir=settings.output_dir
    )
    for text in result.lines:
        out(text)
    return 0 if result.ok else 1


_COMMANDS: dict[str, Callable[[Settings, pytest.Config], int]] = {
    "models-list": _models_list,
    "stages-list": _stages_list,
    "discover": _discover,
    "status": _status,
    "report": _report,
    "apply-plan": _apply_plan,
    "apply": _apply,
    "precheck": _precheck,
}

__all__ = ["run"]
