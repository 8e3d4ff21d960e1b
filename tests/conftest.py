"""Shared fixtures: projects that use the plugin, built in pytester's tmp dir."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

# Import the plugin's modules here, in the outer session: pytester's
# in-process runs drop modules first imported inside them, which would leave
# half-imported libraries (psutil) behind for the next run.
import pytest_tune_ci.apply
import pytest_tune_ci.report
import pytest_tune_ci.session  # noqa: F401


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A copy of the bundled demo suite and model, as a user's project."""
    shutil.copytree(REPO / "examples" / "demo", pytester.path / "examples" / "demo")
    shutil.copytree(REPO / "models" / "demo", pytester.path / "models" / "demo")
    pytester.makeini(
        """
        [pytest]
        tune_models_dir = models
        """
    )
    return pytester


def write_model(
    pytester: pytest.Pytester, name: str, config: str, files: dict[str, str]
) -> Path:
    """A project with one model and the given test files (dedented)."""
    model_dir = pytester.path / "models" / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(textwrap.dedent(config))
    for rel, text in files.items():
        path = pytester.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    if not (pytester.path / "tox.ini").exists():
        pytester.makeini(
            """
            [pytest]
            tune_models_dir = models
            """
        )
    return model_dir
