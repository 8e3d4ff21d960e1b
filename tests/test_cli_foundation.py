"""The no-test commands of the foundation, driven as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_tune_ci.stages import load_stages
from tests.conftest import write_model


CONFIG = """\
name: speedy
test_globs: ["tests/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
  test_speedy_ci.py:
    json_file: "test_speedy0/results.json"
    paths:
      accuracy: "summary.accuracy"
      throughput_qps: "speed.throughput_qps"
"""

TEST = """\
CONCURRENCY = 4
SPEEDY_MIN_ACCURACY = 0.5
_SPEEDY_P95 = {4: {"throughput_qps": 2.0, "latency_mean_s": 1.5}}


def test_speedy():
    assert CONCURRENCY == 4
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    write_model(pytester, "speedy", CONFIG, {"tests/test_speedy_ci.py": TEST})
    return pytester


def test_models_list_uses_the_ini_dir(pytester: pytest.Pytester) -> None:
    for name in ("zeta", "alpha"):
        model_dir = pytester.path / "calib" / "models" / name
        model_dir.mkdir(parents=True)
        (model_dir / "config.yaml").write_text(f"name: {name}\ntest_globs: [t.py]\n")
    (pytester.path / "calib" / "models" / "notes").mkdir()
    pytester.makeini("[pytest]\ntune_models_dir = calib/models\n")
    result = pytester.runpytest("--tune-models-list")
    assert result.ret == 0
    assert result.outlines == ["alpha", "zeta"]


def test_discover_then_list(project: pytest.Pytester) -> None:
    result = project.runpytest("--tune-model", "speedy", "--tune-discover")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "[[]speedy[]] 2 stages written to models/speedy/stages.yaml, "
            "2 metric(s) OK, 1 need config",
            "  tests/test_speedy_ci.py: latency_mean_s "
            "(_SPEEDY_P95[[]4[]][[]'latency_mean_s'[]]) of speedy_speed has no "
            "JSON path in metric_sources (NEEDS_CONFIG)",
        ]
    )
    result.stdout.no_fnmatch_line("*passed*")  # no test ran
    stages = load_stages(project.path / "models" / "speedy" / "stages.yaml")
    assert list(stages) == ["speedy_accuracy", "speedy_speed"]

    result = project.runpytest("--tune-model", "speedy", "--tune-stages-list")
    assert result.ret == 0
    assert result.outlines == [
        "bases:",
        "  speedy  (tests/test_speedy_ci.py)",
        "    speedy_accuracy  [accuracy]",
        "    speedy_speed  [speed]",
        "groups:",
        "  @accuracy (1): speedy_accuracy",
        "  @speed (1): speedy_speed",
    ]


def test_stages_list_before_discovery(project: pytest.Pytester) -> None:
    result = project.runpytest("--tune-model", "speedy", "--tune-stages-list")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *models/speedy/stages.yaml: no stages.yaml yet; run "
         "pytest --tune-model speedy --tune-discover"]
    )  # fmt: skip


def test_unknown_model_lists_known_ones(project: pytest.Pytester) -> None:
    result = project.runpytest("--tune-model", "speedx", "--tune-discover")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: unknown model 'speedx' in models (did you mean 'speedy'?); "
            "known models: speedy"
        ]
    )


def test_zero_repeats_refused(project: pytest.Pytester) -> None:
    result = project.runpytest("--tune-model", "speedy", "--tune-repeats", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tune-repeats*expected a positive integer, got 0*"])


def test_config_error_without_traceback(pytester: pytest.Pytester) -> None:
    write_model(
        pytester,
        "speedy",
        CONFIG.replace("json_file:", "json_fil:"),
        {"tests/test_speedy_ci.py": TEST},
    )
    result = pytester.runpytest("--tune-model", "speedy", "--tune-discover")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.errlines[0] == (
        "ERROR: models/speedy/config.yaml: metric_sources.test_speedy_ci.py.json_fil:"
        " unknown key (did you mean 'json_file'?); expected one of: json_file, paths,"
        " sample_counts, sample_counts_by_group, expected_samples, ignored_constants,"
        " threshold_file, observation_validity, allowed_pytest_failure, context_vars,"
        " variants"
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_duplicate_claim_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_model(
        pytester,
        "speedy",
        CONFIG,
        {"tests/test_speedy_ci.py": TEST + "SPEEDY_THROUGHPUT_MIN = 1.0\n"},
    )
    result = pytester.runpytest("--tune-model", "speedy", "--tune-discover")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.errlines[0].startswith(
        "ERROR: tests/test_speedy_ci.py: speedy_speed.throughput_qps: "
        "_SPEEDY_P95[4]['throughput_qps'] (line 3) and SPEEDY_THROUGHPUT_MIN "
        "(line 8) both claim this metric; "
    )
    assert not (pytester.path / "models" / "speedy" / "stages.yaml").exists()


def test_unknown_stage_token(project: pytest.Pytester) -> None:
    assert project.runpytest("--tune-model", "speedy", "--tune-discover").ret == 0
    result = project.runpytest(
        "--tune-model", "speedy", "--tune-stages", "bogus", "--tune-gpus", "none"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: unknown stage token(s) 'bogus'; stage keys: speedy_accuracy, "
            "speedy_speed; bases: speedy; groups: @accuracy, @speed"
        ]
    )


def test_bundled_models_are_listed() -> None:
    repo = Path(__file__).resolve().parent.parent
    from pytest_tune_ci.config import list_models

    assert {"qwen3-omni-v1", "s2-pro-v1"} <= set(list_models(repo / "models"))
