from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from pytest_tune_ci.config import CountSources
from pytest_tune_ci.config import ModelConfig
from pytest_tune_ci.config import ThresholdPolicy
from pytest_tune_ci.config import list_models
from pytest_tune_ci.config import load_config_file
from pytest_tune_ci.config import load_model
from pytest_tune_ci.config import split_source
from pytest_tune_ci.errors import ConfigError
from pytest_tune_ci.errors import TuneError


REPO = Path(__file__).resolve().parent.parent
FILE = "models/m/config.yaml"

MINIMAL = """\
name: m
test_globs: ["tests/test_*.py"]
"""

# Every key the legacy tool read, in the legacy layout (values made up).
LEGACY = """\
# Model-specific config.
name: m
description: "Demo model (Talker + Thinker)"
hf_model_id: "org/model"
hf_model_ids_by_test:
  test_b_ci.py:
    - "org/model-fp8"
hf_datasets:
  - "org/ds-a"
  - "org/ds-b"
hf_datasets_by_test:
  test_a_ci.py: ["org/ds-a"]
requires_speaker_sim: false
requires_speaker_sim_by_test:
  test_b_ci.py: true
omni_ci_home: "/ci/home/m"
default_venv_python:
  - "/venvs/a/bin/python"
  - "/venvs/b/bin/python"
expected_wer_normalizer: "english"
auto_env:
  HF_HUB_DISABLE_XET: "1"
  XDG_CACHE_HOME: "/elsewhere/.cache"
gpus_per_test:
  test_a_ci.py: 2
test_globs:
  - "tests/test_model/test_*_ci.py"
extra_env:
  test_a_ci.py:
    FOO: "bar"
    LEVEL: 3
pytest_extra_args:
  test_b_ci.py:
    - "--concurrency"
    - 16
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
stage_base_docs_override: "m_docs"
precheck_checklist: {paths: ["/x"], commands: ["nvidia-smi"]}
agent_policy: {env_check: true, poll_interval_max_s: 120}
handoff: {goal: "calibrate"}
metric_sources:
  test_a_ci.py:
    json_file: "test_a0/a/a_results.json"
    expected_samples: 50
    threshold_file: "tests/test_model/a_thresholds.py"
    ignored_constants: [A_SIMILARITY_MIN]
    observation_validity: "test_a0/a/valid.json::valid"
    sample_counts:
      total: "summary.total_samples"
      ok: "speed.completed_requests"
    sample_counts_by_group:
      wer:
        total: "test_a0/a/wer.json::per_sample.__len__"
        ok: "test_a0/a/wer.json::summary.evaluated"
    paths:
      accuracy: "summary.accuracy"
      throughput_qps: "speed.throughput_qps"
      corpus_wer: "test_a0/a/wer.json::summary.wer_corpus"
  test_b_ci.py:
    expected_samples: {speed: 2000, wer: 40}
    variants:
      nonstream:
        constant_filter: "^VC_(?!STREAM_).*|^VC_NON_STREAM.*"
        json_file: "t0/vc_nonstream_c16/speed_results.json"
        sample_counts:
          total: "summary.total_requests"
          ok: "summary.total_requests"
        paths:
          rtf_mean: "summary.rtf_mean"
      stream:
        constant_filter: "^VC_STREAM_.*"
        stage_base_override: "b_live"
        omit_variant_suffix: true
        context_vars: [MAX_SAMPLES]
        json_file: "t1/vc_stream_c16/speed_results.json"
        expected_samples: 32
        paths:
          rtf_mean: "summary.rtf_mean"
"""


def write(tmp_path: Path, text: str, name: str = "m") -> Path:
    path = tmp_path / "models" / name / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> ModelConfig:
    write(tmp_path, text)
    return load_model(tmp_path / "models", "m", tmp_path)


def test_legacy_config_loads(tmp_path: Path) -> None:
    model = load(tmp_path, LEGACY)
    assert model.name == "m"
    assert model.path == tmp_path / "models" / "m" / "config.yaml"
    assert model.dir == model.path.parent
    assert model.stages_path == model.dir / "stages.yaml"
    assert model.raw_sha256 == hashlib.sha256(model.path.read_bytes()).hexdigest()
    assert model.description == "Demo model (Talker + Thinker)"
    assert model.hf_model_id == "org/model"
    assert model.hf_model_ids_by_test == {"test_b_ci.py": ["org/model-fp8"]}
    assert model.hf_datasets == ["org/ds-a", "org/ds-b"]
    assert model.hf_datasets_by_test == {"test_a_ci.py": ["org/ds-a"]}
    assert model.requires_speaker_sim_by_test == {"test_b_ci.py": True}
    assert model.default_venv_python == ["/venvs/a/bin/python", "/venvs/b/bin/python"]
    assert model.expected_wer_normalizer == "english"
    # omni_ci_home seeds defaults but never overrides auto_env.
    assert model.auto_env == {
        "HF_HUB_DISABLE_XET": "1",
        "XDG_CACHE_HOME": "/elsewhere/.cache",
        "OMNI_CI_HOME": "/ci/home/m",
        "TORCHINDUCTOR_CACHE_DIR": "/ci/home/m/.torchinductor",
    }
    assert model.extra_env == {"test_a_ci.py": {"FOO": "bar", "LEVEL": "3"}}
    assert model.pytest_extra_args == {"test_b_ci.py": ["--concurrency", "16"]}
    assert model.gpus_for("test_a_ci.py") == 2
    assert model.gpus_for("test_unlisted.py") == 1
    assert model.test_globs == ["tests/test_model/test_*_ci.py"]
    assert model.stage_base_strip_prefix == "test_"
    assert model.stage_base_docs_override == "m_docs"

    a = model.metric_sources["test_a_ci.py"]
    assert a.json_file == "test_a0/a/a_results.json"
    assert a.paths["corpus_wer"] == "test_a0/a/wer.json::summary.wer_corpus"
    assert a.sample_counts == CountSources(
        "summary.total_samples", "speed.completed_requests"
    )
    assert a.counts_for("wer") == CountSources(
        "test_a0/a/wer.json::per_sample.__len__",
        "test_a0/a/wer.json::summary.evaluated",
    )
    assert a.counts_for("speed") == a.sample_counts
    assert a.expected_for("speed") == 50
    assert a.threshold_file == "tests/test_model/a_thresholds.py"
    assert a.ignored_constants == ["A_SIMILARITY_MIN"]
    assert a.observation_validity == "test_a0/a/valid.json::valid"

    b = model.metric_sources["test_b_ci.py"]
    assert list(b.variants) == ["nonstream", "stream"]
    nonstream, stream = b.variants["nonstream"], b.variants["stream"]
    assert nonstream.constant_filter == "^VC_(?!STREAM_).*|^VC_NON_STREAM.*"
    assert nonstream.expected_for("wer") == 40  # inherited from the test entry
    assert nonstream.expected_for("accuracy") is None
    assert stream.expected_for("wer") == 32
    assert stream.stage_base_override == "b_live"
    assert stream.omit_variant_suffix is True
    assert stream.context_vars == ["MAX_SAMPLES"]


def test_plugin_key_defaults(tmp_path: Path) -> None:
    model = load(tmp_path, MINIMAL)
    assert model.metric_sources == {}
    assert model.thresholds == {}
    assert model.concurrency == {}
    assert model.crash_signatures == []
    assert model.watch_logs == []
    assert model.attempt_timeout_s is None
    assert model.stall_timeout_s is None
    assert model.gpu_free_mib == 2048
    assert model.gpu_wait_s == 600
    assert model.gpu_exclude == []
    assert model.exclusive_groups == []
    assert model.threshold_policy == {}
    assert model.policy_for("speed") == ThresholdPolicy("worst")
    assert model.ci_slack == {}
    assert model.noise_cv_max == {"speed": 0.05}
    assert model.pins_file == "pyproject.toml"
    assert model.gpus_for("test_x.py") == 1
    assert model.auto_env == {}


def test_plugin_keys(tmp_path: Path) -> None:
    model = load(
        tmp_path,
        """\
        name: m
        test_globs: ["tests/test_*.py"]
        gpus_per_test: 4
        metrics:
          tokens_per_joule:
            worst: min
            label: "Tokens/J"
            group: efficiency
            digits: 1
            patterns: [".*TOK_PER_J_MIN"]
            nested_keys: [tok_per_j]
          accuracy:
            patterns: ["SCORE_FLOOR"]
        thresholds:
          test_a.py:
            LIMITS: tokens_per_joule
            "TABLE[score]": accuracy
            "TABLE['rate']": throughput_qps
        concurrency: {test_a.py: 8}
        crash_signatures: ["Fatal Python error", "worker \\\\d+ died"]
        watch_logs: ["server_logs/*.log"]
        attempt_timeout_s: 3600
        stall_timeout_s: 900.5
        gpu_free_mib: 1024
        gpu_wait_s: 30
        gpu_exclude: [6, 7]
        exclusive_groups: [speed]
        threshold_policy:
          default: worst
          speed: "slack:5"
          accuracy: "predict:0.01"
        ci_slack: {speed: 0.875, corpus_wer: 1.25}
        noise_cv_max: {efficiency: 0.1}
        pins_file: "requirements/ci.toml"
        """,
    )
    assert model.gpus_for("anything.py") == 4
    assert model.registry.match_name("X_TOK_PER_J_MIN") == "tokens_per_joule"
    assert model.registry.match_name("SCORE_FLOOR") == "accuracy"
    assert model.thresholds == {
        "test_a.py": {
            ("LIMITS", None): "tokens_per_joule",
            ("TABLE", "score"): "accuracy",
            ("TABLE", "rate"): "throughput_qps",
        }
    }
    assert model.concurrency == {"test_a.py": 8}
    assert model.crash_signatures == ["Fatal Python error", "worker \\d+ died"]
    assert model.watch_logs == ["server_logs/*.log"]
    assert model.attempt_timeout_s == 3600
    assert model.stall_timeout_s == 900.5
    assert (model.gpu_free_mib, model.gpu_wait_s, model.gpu_exclude) == (
        1024,
        30,
        [6, 7],
    )
    assert model.exclusive_groups == ["speed"]
    assert model.threshold_policy == {
        "default": ThresholdPolicy("worst"),
        "speed": ThresholdPolicy("slack", 5.0),
        "accuracy": ThresholdPolicy("predict", 0.01),
    }
    assert model.policy_for("wer") == ThresholdPolicy("worst")
    assert model.policy_for("speed").text == "slack:5"
    assert model.ci_slack == {"speed": 0.875, "corpus_wer": 1.25}
    assert model.noise_cv_max == {"speed": 0.05, "efficiency": 0.1}
    assert model.pins_file == "requirements/ci.toml"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        pytest.param(
            MINIMAL + "metric_sourcs: {}\n",
            "metric_sourcs",
            "unknown key (did you mean 'metric_sources'?)",
            id="unknown-top-key",
        ),
        pytest.param(
            MINIMAL + "metric_sources:\n  test_x.py:\n    json_fil: a.json\n",
            "metric_sources.test_x.py.json_fil",
            "unknown key (did you mean 'json_file'?)",
            id="unknown-nested-key",
        ),
        pytest.param(
            MINIMAL + "metric_sources:\n  test_x.py:\n    paths: {acuracy: a.b}\n",
            "metric_sources.test_x.py.paths.acuracy",
            "unknown metric 'acuracy' (did you mean 'accuracy'?)",
            id="unknown-metric-in-paths",
        ),
        pytest.param(
            MINIMAL + "gpus_per_test:\n  test_x.py: two\n",
            "gpus_per_test.test_x.py",
            "expected an integer, got the string 'two'",
            id="wrong-type",
        ),
        pytest.param(
            MINIMAL + "metric_sources:\n  test_x.py:\n    paths: [summary.accuracy]\n",
            "metric_sources.test_x.py.paths",
            "expected a mapping, got a list",
            id="list-for-mapping",
        ),
        pytest.param(
            MINIMAL + "gpus_per_test: -1\n",
            "gpus_per_test",
            "expected an integer >= 0, got -1",
            id="negative-gpus",
        ),
        pytest.param(
            MINIMAL + "gpus_per_test: {test_x.py: -2}\n",
            "gpus_per_test.test_x.py",
            "expected an integer >= 0, got -2",
            id="negative-gpus-per-test",
        ),
        pytest.param(
            MINIMAL
            + "metric_sources:\n  test_x.py:\n    json_file: ../../etc/x.json\n",
            "metric_sources.test_x.py.json_file",
            "expected a path inside its base directory, got '../../etc/x.json'",
            id="json-file-escapes",
        ),
        pytest.param(
            MINIMAL
            + "metric_sources:\n  test_x.py:\n    paths:\n"
            + "      accuracy: /tmp/r.json::summary.accuracy\n",
            "metric_sources.test_x.py.paths.accuracy",
            "expected a relative file, got the absolute '/tmp/r.json'",
            id="absolute-file-part",
        ),
        pytest.param(
            MINIMAL
            + "metric_sources:\n  test_x.py:\n    paths:\n"
            + "      accuracy: a/../../r.json::summary.accuracy\n",
            "metric_sources.test_x.py.paths.accuracy",
            "expected a file inside its base directory",
            id="file-part-escapes",
        ),
        pytest.param(
            "name: m\ntest_globs: ['../other/tests/test_*.py']\n",
            "test_globs[0]",
            "expected a glob inside its base directory",
            id="glob-escapes",
        ),
        pytest.param(
            MINIMAL + "metric_sources:\n  test_x.py:\n    threshold_file: /abs/t.py\n",
            "metric_sources.test_x.py.threshold_file",
            "expected a relative path, got the absolute '/abs/t.py'",
            id="absolute-threshold-file",
        ),
        pytest.param(
            MINIMAL
            + "metric_sources:\n  test_x.py:\n    variants:\n"
            + "      a: {constant_filter: '^VC_(('}\n",
            "metric_sources.test_x.py.variants.a.constant_filter",
            "expected a Python regex: missing ), unterminated subpattern",
            id="bad-regex",
        ),
        pytest.param(
            MINIMAL + "threshold_policy: {speed: 'slack:-1'}\n",
            "threshold_policy.speed",
            "expected worst, slack:P (P >= 0) or predict:A (0 < A < 1), got 'slack:-1'",
            id="bad-policy-value",
        ),
        pytest.param(
            MINIMAL + "threshold_policy: {speed: 'predict:2'}\n",
            "threshold_policy.speed",
            "got 'predict:2'",
            id="bad-predict-alpha",
        ),
        pytest.param(
            MINIMAL + "threshold_policy: {sped: worst}\n",
            "threshold_policy.sped",
            "unknown stage group 'sped' (did you mean 'speed'?)",
            id="bad-policy-group",
        ),
        pytest.param(
            MINIMAL + "metrics:\n  my_metric: {label: X, group: speed}\n",
            "metrics.my_metric.worst",
            "missing; a new metric needs worst, label and group",
            id="metric-missing-worst",
        ),
        pytest.param(
            MINIMAL + "metrics:\n  my_metric: {worst: up, label: X, group: speed}\n",
            "metrics.my_metric.worst",
            "expected min or max, got the string 'up'",
            id="metric-bad-worst",
        ),
        pytest.param(
            MINIMAL + "metrics:\n  accuracy: {worst: max}\n",
            "metrics.accuracy.worst",
            "cannot change a built-in metric's worst",
            id="metric-builtin-worst",
        ),
        pytest.param(
            MINIMAL
            + "metrics:\n  my_metric: {worst: min, label: X, group: speed,"
            + " patterns: ['(']}\n",
            "metrics.my_metric.patterns[0]",
            "expected a Python regex",
            id="metric-bad-pattern",
        ),
        pytest.param(
            MINIMAL + "metrics:\n  my_metric: {worst: min, label: X, grup: speed}\n",
            "metrics.my_metric.grup",
            "unknown key (did you mean 'group'?)",
            id="metric-unknown-field",
        ),
        pytest.param(
            MINIMAL + "thresholds:\n  test_x.py: {SCORE: acuracy}\n",
            "thresholds.test_x.py.SCORE",
            "unknown metric 'acuracy' (did you mean 'accuracy'?)",
            id="thresholds-unknown-metric",
        ),
        pytest.param(
            MINIMAL + "thresholds:\n  test_x.py: {'SCORE[': accuracy}\n",
            "thresholds.test_x.py.SCORE[",
            "expected SYMBOL or SYMBOL[inner_key]",
            id="thresholds-bad-ref",
        ),
        pytest.param(
            MINIMAL + "calibration_presets: {higgs: {gpus: 2}}\n",
            "calibration_presets",
            "not supported yet",
            id="calibration-presets",
        ),
        pytest.param(
            "name: m\n",
            "test_globs",
            "expected a non-empty list of globs",
            id="no-test-globs",
        ),
        pytest.param(
            MINIMAL + "extra_env:\n  tests/test_x.py: {A: b}\n",
            "extra_env.tests/test_x.py",
            "expected a test file basename such as test_x_ci.py",
            id="path-for-basename",
        ),
        pytest.param(
            MINIMAL + "auto_env: {PATHS: [a, b]}\n",
            "auto_env.PATHS",
            "expected a string value, got a list",
            id="env-list",
        ),
        pytest.param(
            MINIMAL + "crash_signatures: ['[unclosed']\n",
            "crash_signatures[0]",
            "expected a Python regex",
            id="bad-crash-signature",
        ),
        pytest.param(
            MINIMAL
            + "metric_sources:\n  test_x.py:\n    sample_counts:\n"
            + "      total: per_sample.__len__.x\n",
            "metric_sources.test_x.py.sample_counts.total",
            "expected .__len__ only at the end of the path",
            id="len-in-the-middle",
        ),
        pytest.param(
            MINIMAL + "attempt_timeout_s: 0\n",
            "attempt_timeout_s",
            "expected a positive number, got 0",
            id="zero-timeout",
        ),
        pytest.param(
            MINIMAL + "concurrency: {test_x.py: '16'}\n",
            "concurrency.test_x.py",
            "expected an integer, got the string '16'",
            id="concurrency-string",
        ),
        pytest.param(
            MINIMAL + "ci_slack: {sped: 1.1}\n",
            "ci_slack.sped",
            "unknown group or metric 'sped' (did you mean 'speed'?)",
            id="ci-slack-unknown",
        ),
        pytest.param(
            MINIMAL + "exclusive_groups: speed\n",
            "exclusive_groups",
            "expected a list of strings, got the string 'speed'",
            id="string-for-list",
        ),
        pytest.param(
            MINIMAL + "metric_sources:\n  test_x.py:\n    constant_filter: '^A'\n",
            "metric_sources.test_x.py.constant_filter",
            "unknown key",
            id="filter-outside-variant",
        ),
    ],
)
def test_config_errors(tmp_path: Path, text: str, key: str, expected: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_model(tmp_path / "models", "m", tmp_path)
    err = info.value
    assert err.file == FILE
    assert err.key == key
    assert expected in err.detail
    assert str(err).startswith(f"{FILE}: {key}: ")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "name: m\ntest_globs:\n  - a\n  b: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_model(tmp_path / "models", "m", tmp_path)
    assert info.value.file == FILE
    assert info.value.key == "line 4"
    assert "invalid YAML" in info.value.detail


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL + "metric_sources:\n  test_x.py: {}\n  test_x.py: {}\n")
    with pytest.raises(ConfigError, match=r"line 5: invalid YAML: duplicate key"):
        load_model(tmp_path / "models", "m", tmp_path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, "- name: m\n")
    with pytest.raises(
        ConfigError, match="expected a mapping of config keys, got a list"
    ):
        load_model(tmp_path / "models", "m", tmp_path)


def test_name_must_match_directory(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.replace("name: m", "name: other"))
    with pytest.raises(
        ConfigError, match="name: expected 'm' \\(the directory name\\)"
    ):
        load_model(tmp_path / "models", "m", tmp_path)


def test_list_models_and_unknown_model(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.replace("name: m", "name: beta"), name="beta")
    write(tmp_path, MINIMAL.replace("name: m", "name: alpha"), name="alpha")
    (tmp_path / "models" / "no_config").mkdir()
    assert list_models(tmp_path / "models") == ["alpha", "beta"]
    assert list_models(tmp_path / "missing") == []
    with pytest.raises(TuneError) as info:
        load_model(tmp_path / "models", "alpah", tmp_path)
    message = str(info.value)
    assert "unknown model 'alpah' in models" in message
    assert "(did you mean 'alpha'?)" in message
    assert message.endswith("known models: alpha, beta")


def test_load_config_file_reloads_a_copy(tmp_path: Path) -> None:
    original = write(tmp_path, LEGACY)
    copy = tmp_path / "run" / "config.yaml"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())
    model = load_config_file(copy, tmp_path)
    assert model.name == "m"  # from the file, not the directory
    assert model.raw_sha256 == load_model(tmp_path / "models", "m", tmp_path).raw_sha256


def test_split_source() -> None:
    assert split_source("summary.accuracy", "r.json") == ("r.json", "summary.accuracy")
    assert split_source("w.json::summary.wer", "r.json") == ("w.json", "summary.wer")
    assert split_source("a.b", None) == (None, "a.b")


@pytest.mark.parametrize("name", ["qwen3-omni-v1", "s2-pro-v1"])
def test_bundled_configs_load(name: str) -> None:
    model = load_model(REPO / "models", name, REPO)
    assert model.name == name
    assert all(not v.startswith("/") for v in model.auto_env.values())
    assert model.omni_ci_home is None
    assert model.default_venv_python == []
