"""Validated command-line settings of one pytest invocation."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


APPLY_MODES = ("report", "smart", "full")


def positive_int(text: str) -> int:
    """``type=`` callable for counts: refuses 0, negatives and non-numbers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    model: str | None
    repeats: int
    repeats_given: bool
    stages: str
    output_dir: Path | None
    resume: Path | None
    max_attempts: int
    max_passes: int
    models_list: bool
    stages_list: bool
    discover: bool
    status: Path | None
    gpus: str | None
    precheck: bool
    skip_precheck: bool
    report: Path | None
    report_partial: bool
    apply_plan: Path | None
    apply: Path | None
    apply_mode: str
    apply_answers: Path | None
    models_dir: Path
    output_root: Path

    @property
    def command(self) -> str | None:
        """The one no-test command asked for, if any."""
        if self.models_list:
            return "models-list"
        if self.stages_list:
            return "stages-list"
        if self.discover:
            return "discover"
        if self.status is not None:
            return "status"
        if self.report is not None:
            return "report"
        if self.apply_plan is not None:
            return "apply-plan"
        if self.apply is not None:
            return "apply"
        if self.precheck:
            return "precheck"
        return None

    @property
    def calibrating(self) -> bool:
        return self.command is None and (
            self.model is not None or self.resume is not None
        )
