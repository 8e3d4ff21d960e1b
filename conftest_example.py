"""What a project adds to use pytest-tune-ci (copy the parts you need).

Installing ``pytest-tune-ci`` registers the plugin through its ``pytest11``
entry point, so nothing has to be imported. A project tells it where its
model configs live and where run directories go, in its pytest ini::

    # pyproject.toml
    [tool.pytest.ini_options]
    tune_models_dir = "ci/tune-models"   # holds <model>/config.yaml
    tune_output_root = ".tune-runs"      # run dirs, never collected
    tune_gpus = "nvml"                   # or "none", or "sim:gpus.json"

and calibrates with::

    pytest --tune-model qwen3-omni-v1 --tune-discover      # once, then review
    pytest --tune-model qwen3-omni-v1 --tune-repeats 5     # add -n auto for all GPUs
    pytest --tune-apply .tune-runs/<run-dir> --tune-apply-mode smart

A conftest can read which repeat is running, e.g. to label server logs.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def calibration_repeat() -> int | None:
    """The repeat being calibrated (1..N), or None in a plain pytest run."""
    value = os.environ.get("TUNE_CI_REPEAT")
    return int(value) if value else None
