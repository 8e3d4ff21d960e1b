from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_tune_ci.config import ModelConfig
from pytest_tune_ci.config import load_model
from pytest_tune_ci.discover import candidates
from pytest_tune_ci.discover import check_fresh
from pytest_tune_ci.discover import discover_model
from pytest_tune_ci.errors import ConfigError
from pytest_tune_ci.errors import TuneError
from pytest_tune_ci.logic import file_sha256
from pytest_tune_ci.logic import logic_hash
from pytest_tune_ci.stages import Location
from pytest_tune_ci.stages import load_stages


Make = Callable[..., ModelConfig]

HEAD = """\
name: m
test_globs: ["tests/test_*.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
"""

SPEED_SOURCE = """\
  test_speed_ci.py:
    json_file: "run0/results.json"
    paths:
      accuracy: "summary.accuracy"
      throughput_qps: "speed.throughput_qps"
      latency_mean_s: "speed.latency_mean_s"
"""


@pytest.fixture
def make(tmp_path: Path) -> Make:
    """Write config.yaml plus test files under tmp_path; return the model."""

    def build(config: str, files: dict[str, str]) -> ModelConfig:
        model_dir = tmp_path / "models" / "m"
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.yaml").write_text(textwrap.dedent(config))
        for rel, text in files.items():
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return load_model(tmp_path / "models", "m", tmp_path)

    return build


def test_every_constant_form() -> None:
    source = textwrap.dedent(
        """\
        A_MIN_ACCURACY = 0.5
        B_N_ABOVE_50_MAX = 4
        C_LATENCY_MEAN_MAX = -1.5
        D_RTF_MEAN_MAX = 1e-3
        E_MAX_FAILED_REQUESTS = 1_000
        F_CORPUS_WER_MAX: float = 0.25
        G_MAX: int | None = None
        _P95 = {16: {"throughput_qps": 1.5, "latency_mean_s": 2}, 32: {"x": "s"}}
        FLAT = {"rtf_mean": 0.3}
        BY_LEVEL = {8: 10, 16: 12}
        DERIVED = apply_slack(0.3)
        SUM = 0.1 + 0.2
        lower_case = 3
        FLAG = True
        NAME = "text"
        A, B = 1, 2
        REASSIGNED = 1
        REASSIGNED = 2.5
        """
    )
    found = {c.location.ref: c for c in candidates(ast.parse(source), "t.py")}
    assert {ref: c.value for ref, c in found.items()} == {
        "A_MIN_ACCURACY": 0.5,
        "B_N_ABOVE_50_MAX": 4,
        "C_LATENCY_MEAN_MAX": -1.5,
        "D_RTF_MEAN_MAX": 0.001,
        "E_MAX_FAILED_REQUESTS": 1000,
        "F_CORPUS_WER_MAX": 0.25,
        "_P95[16]['throughput_qps']": 1.5,
        "_P95[16]['latency_mean_s']": 2,
        "FLAT['rtf_mean']": 0.3,
        "BY_LEVEL[8]": 10,
        "BY_LEVEL[16]": 12,
        "REASSIGNED": 2.5,
    }
    assert found["B_N_ABOVE_50_MAX"].integer
    assert found["E_MAX_FAILED_REQUESTS"].integer
    assert not found["A_MIN_ACCURACY"].integer
    assert found["_P95[16]['latency_mean_s']"].integer
    assert found["_P95[16]['throughput_qps']"].location == Location(
        "t.py", "_P95", 16, "throughput_qps", 8
    )
    assert found["REASSIGNED"].location.line == 18


def test_discovery_writes_stages(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD + "gpus_per_test: 2\nmetric_sources:\n" + SPEED_SOURCE,
        {
            "tests/test_speed_ci.py": """\
            MAX_SAMPLES = 20
            CONCURRENCY = 16
            MODE = "fast"
            SPEED_MIN_ACCURACY = 0.5
            SPEED_ACCURACY_THRESHOLD = 0.4
            THRESHOLD_SLACK_HIGHER = 0.75
            _SPEED_P95 = {16: {"throughput_qps": 1.5, "latency_mean_s": 3}}
            SPEED_THRESHOLDS = apply_slack(_SPEED_P95)

            def test_it():
                run(max_samples=MAX_SAMPLES, max_concurrency=CONCURRENCY, mode=MODE)
                run(max_tokens=OTHER, max_new_tokens=128)
            """
        },
    )
    result = discover_model(model, tmp_path)
    assert result.path == model.stages_path
    assert result.summary_lines == [
        "[m] 2 stages written to models/m/stages.yaml, 3 metric(s) OK, 0 need config"
    ]
    stages = load_stages(model.stages_path)
    assert list(stages) == ["speed_accuracy", "speed_speed"]
    assert stages == result.stages
    acc, speed = stages["speed_accuracy"], stages["speed_speed"]
    assert (acc.title, acc.group, acc.base, acc.variant) == (
        "SPEED Accuracy",
        "accuracy",
        "speed",
        None,
    )
    assert speed.title == "SPEED Speed"
    assert acc.context_vars == ["MAX_SAMPLES", "CONCURRENCY", "OTHER"]
    assert acc.context == {"MAX_SAMPLES": 20, "CONCURRENCY": 16, "OTHER": None}
    assert acc.concurrency == 16
    assert acc.gpus == 2
    assert acc.test == "tests/test_speed_ci.py"
    raw = (tmp_path / acc.test).read_bytes()
    assert acc.test_file_sha256 == file_sha256(raw)
    metric = acc.metrics["accuracy"]
    assert metric.source == "SPEED_MIN_ACCURACY"
    assert (metric.json_file, metric.json_path) == (
        "run0/results.json",
        "summary.accuracy",
    )
    assert (metric.worst, metric.status, metric.current, metric.integer) == (
        "min",
        "OK",
        0.5,
        False,
    )
    assert metric.display.scale == 100
    assert list(speed.metrics) == ["throughput_qps", "latency_mean_s"]
    lat = speed.metrics["latency_mean_s"]
    assert lat.location == Location(acc.test, "_SPEED_P95", 16, "latency_mean_s", 7)
    assert (lat.current, lat.integer, lat.worst) == (3, True, "max")
    # All stages of a file share the logic hash over all its thresholds.
    locations = [m.location for s in stages.values() for m in s.metrics.values()]
    expected = logic_hash(raw.decode(), locations)
    assert acc.test_logic_sha256 == speed.test_logic_sha256 == expected


def test_second_discovery_is_byte_identical(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD + "metric_sources:\n" + SPEED_SOURCE,
        {
            "tests/test_speed_ci.py": """\
            CONCURRENCY = 16
            SPEED_MIN_ACCURACY = 0.5
            _SPEED_P95 = {16: {"throughput_qps": 1.5}, 8: {"throughput_qps": 3.0}}
            """
        },
    )
    discover_model(model, tmp_path)
    first = model.stages_path.read_bytes()
    discover_model(model, tmp_path)
    assert model.stages_path.read_bytes() == first
    assert b"discovered_at" not in first
    assert not list(model.dir.glob("*.tune-tmp"))


def test_only_logic_changes_change_the_logic_hash(make: Make, tmp_path: Path) -> None:
    test_file = tmp_path / "tests" / "test_speed_ci.py"
    model = make(
        HEAD + "metric_sources:\n" + SPEED_SOURCE,
        {
            "tests/test_speed_ci.py": """\
            CONCURRENCY = 16
            SPEED_MIN_ACCURACY = 0.5
            _SPEED_P95 = {16: {"throughput_qps": 1.5}, 8: {"throughput_qps": 3.0}}

            def test_it():
                assert True
            """
        },
    )
    before = discover_model(model, tmp_path).stages
    assert check_fresh(before, tmp_path) == []
    digest = before["speed_accuracy"].test_logic_sha256

    # Rewriting calibrated and uncalibrated threshold literals is not logic.
    text = test_file.read_text()
    edited = text.replace("0.5", "0.4375").replace("3.0", "2.5").replace("1.5", "1")
    test_file.write_text(edited)
    assert check_fresh(before, tmp_path) == []
    after = discover_model(model, tmp_path).stages
    assert after["speed_accuracy"].test_logic_sha256 == digest
    assert after["speed_accuracy"].test_file_sha256 != (
        before["speed_accuracy"].test_file_sha256
    )
    assert after["speed_speed"].metrics["throughput_qps"].current == 1

    # Any other change is.
    test_file.write_text(edited.replace("assert True", "assert 1 == 1"))
    assert check_fresh(after, tmp_path) == ["tests/test_speed_ci.py"]
    test_file.write_text(edited.replace("CONCURRENCY = 16", "CONCURRENCY = 8"))
    assert check_fresh(after, tmp_path) == ["tests/test_speed_ci.py"]
    test_file.unlink()
    assert check_fresh(after, tmp_path) == ["tests/test_speed_ci.py"]


def _speed_model(make: Make, extra: str, prelude: str) -> ModelConfig:
    return make(
        HEAD + extra + "metric_sources:\n" + SPEED_SOURCE,
        {
            "tests/test_speed_ci.py": prelude
            + textwrap.dedent(
                """\
                SPEED_MIN_ACCURACY = 0.5
                _SPEED_P95 = {
                    8: {"throughput_qps": 3.0, "latency_mean_s": 1.0},
                    16: {"throughput_qps": 1.5, "latency_mean_s": 2.0},
                }
                """
            )
        },
    )


@pytest.mark.parametrize(
    ("extra", "prelude"),
    [
        pytest.param("", "CONCURRENCY = 16\n", id="constant"),
        pytest.param("", "CONCURRENCY: int = 16\n", id="annotated-constant"),
        pytest.param("concurrency: {test_speed_ci.py: 16}\n", "", id="config"),
        pytest.param(
            "concurrency: {test_speed_ci.py: 16}\n",
            "CONCURRENCY = 8\n",
            id="config-wins",
        ),
        pytest.param(
            "pytest_extra_args: {test_speed_ci.py: ['-v', '--concurrency', '16']}\n",
            "",
            id="option",
        ),
        pytest.param(
            "pytest_extra_args: {test_speed_ci.py: ['--concurrency=16']}\n",
            "",
            id="option-equals",
        ),
    ],
)
def test_multi_key_dict_uses_the_tests_concurrency(
    make: Make, tmp_path: Path, extra: str, prelude: str
) -> None:
    model = _speed_model(make, extra, prelude)
    result = discover_model(model, tmp_path)
    speed = result.stages["speed_speed"]
    assert speed.concurrency == 16
    assert [m.location.ref for m in speed.metrics.values()] == [
        "_SPEED_P95[16]['throughput_qps']",
        "_SPEED_P95[16]['latency_mean_s']",
    ]
    assert [
        (u.location.ref, u.reason, u.metric, u.current) for u in speed.not_calibrated
    ] == [
        (
            "_SPEED_P95[8]['throughput_qps']",
            "key 8 is not the test's concurrency 16",
            "throughput_qps",
            3.0,
        ),
        (
            "_SPEED_P95[8]['latency_mean_s']",
            "key 8 is not the test's concurrency 16",
            "latency_mean_s",
            1.0,
        ),
    ]
    # Uncalibrated entries are thresholds too: blanked in the logic hash.
    locs = [m.location for m in speed.metrics.values()]
    locs += [u.location for u in speed.not_calibrated]
    locs += [result.stages["speed_accuracy"].metrics["accuracy"].location]
    text = (tmp_path / speed.test).read_text()
    assert speed.test_logic_sha256 == logic_hash(text, locs)


def test_option_and_constant_disagree(make: Make, tmp_path: Path) -> None:
    model = _speed_model(
        make,
        "pytest_extra_args: {test_speed_ci.py: ['--concurrency', '8']}\n",
        "CONCURRENCY = 16\n",
    )
    result = discover_model(model, tmp_path)
    assert result.stages["speed_speed"].concurrency == 8
    assert (
        "  tests/test_speed_ci.py: pytest_extra_args --concurrency 8 differs from "
        "CONCURRENCY = 16; using 8" in result.summary_lines
    )


@pytest.mark.parametrize(
    "extra",
    ["", "pytest_extra_args: {test_speed_ci.py: ['--concurrency', 'all']}\n"],
    ids=["nothing", "option-not-an-int"],
)
def test_undeterminable_concurrency_is_reported(
    make: Make, tmp_path: Path, extra: str
) -> None:
    model = _speed_model(make, extra, "")
    result = discover_model(model, tmp_path)
    assert (
        "  tests/test_speed_ci.py: cannot tell which key of _SPEED_P95 (8, 16) the "
        "test uses; set concurrency: {test_speed_ci.py: N} in config.yaml"
        in result.summary_lines
    )
    speed = result.stages["speed_speed"]
    assert speed.concurrency is None
    assert speed.metrics == {}
    assert {u.reason for u in speed.not_calibrated} == {"concurrency unknown"}
    assert len(speed.not_calibrated) == 4
    assert list(result.stages["speed_accuracy"].metrics) == ["accuracy"]
    assert result.summary_lines[0].endswith("1 metric(s) OK, 0 need config")


def test_single_key_dict_needs_no_concurrency(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD + "metric_sources:\n" + SPEED_SOURCE,
        {"tests/test_speed_ci.py": '_SPEED_P95 = {4: {"throughput_qps": 1.5}}\n'},
    )
    result = discover_model(model, tmp_path)
    speed = result.stages["speed_speed"]
    assert speed.concurrency is None
    assert speed.metrics["throughput_qps"].location.outer_key == 4
    assert speed.not_calibrated == []


def test_dict_without_the_tests_concurrency(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD + "metric_sources:\n" + SPEED_SOURCE,
        {
            "tests/test_speed_ci.py": (
                'CONCURRENCY = 8\n_SPEED_P95 = {16: {"throughput_qps": 1.5}}\n'
            )
        },
    )
    result = discover_model(model, tmp_path)
    assert (
        "  tests/test_speed_ci.py: _SPEED_P95 has no entry for the test's "
        "concurrency 8 (keys: 16)" in result.summary_lines
    )
    assert result.stages["speed_speed"].metrics == {}


def test_ignored_constants_and_collisions(make: Make, tmp_path: Path) -> None:
    test = {
        "tests/test_speed_ci.py": """\
        CONCURRENCY = 16
        SPEED_RTF_MEAN_MAX = 0.95
        SPEED_SIMILARITY_MEAN_MIN = 60.0
        _SPEED_P95 = {16: {"rtf_mean": 0.8, "throughput_qps": 1.0}}
        """
    }
    source = (
        "metric_sources:\n  test_speed_ci.py:\n    json_file: r.json\n"
        "    paths: {rtf_mean: speed.rtf_mean}\n"
    )
    model = make(HEAD + source, test)
    with pytest.raises(ConfigError) as info:
        discover_model(model, tmp_path)
    err = info.value
    assert err.file == "tests/test_speed_ci.py"
    assert err.key == "speed_speed.rtf_mean"
    assert "SPEED_RTF_MEAN_MAX (line 2) and _SPEED_P95[16]['rtf_mean'] (line 4)" in (
        err.detail
    )
    assert "metric_sources.test_speed_ci.py.ignored_constants" in err.detail
    assert not model.stages_path.exists()

    ignored = "    ignored_constants: [SPEED_RTF_MEAN_MAX, SPEED_SIMILARITY_MEAN_MIN]\n"
    model = make(HEAD + source + ignored, test)
    stages = discover_model(model, tmp_path).stages
    assert list(stages) == ["speed_speed"]
    assert stages["speed_speed"].metrics["rtf_mean"].source == "_SPEED_P95['rtf_mean']"

    # One entry of a dict can be ignored alone; unknown names are reported.
    ignored = "    ignored_constants: ['_SPEED_P95[rtf_mean]', NOT_THERE]\n"
    model = make(HEAD + source + ignored, test)
    result = discover_model(model, tmp_path)
    speed = result.stages["speed_speed"]
    assert speed.metrics["rtf_mean"].source == "SPEED_RTF_MEAN_MAX"
    assert list(speed.metrics) == ["rtf_mean", "throughput_qps"]
    assert (
        "  tests/test_speed_ci.py: ignored constant NOT_THERE is not a numeric "
        "constant there" in result.summary_lines
    )


def test_thresholds_override_name_rules(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD
        + textwrap.dedent(
            """\
        metric_sources:
          test_speed_ci.py:
            json_file: r.json
            paths: {accuracy: a, throughput_qps: t, corpus_wer: w}
        thresholds:
          test_speed_ci.py:
            SCORE_FLOOR: accuracy
            "LIMITS[qps]": throughput_qps
            OTHER_MIN_ACCURACY: corpus_wer
            MISSING: accuracy
        """
        ),
        {
            "tests/test_speed_ci.py": """\
            SCORE_FLOOR = 0.7
            LIMITS = {"qps": 2.5, "unused": 1.0}
            OTHER_MIN_ACCURACY = 0.1
            """
        },
    )
    result = discover_model(model, tmp_path)
    stages = result.stages
    assert list(stages) == ["speed_accuracy", "speed_speed", "speed_wer"]
    assert stages["speed_accuracy"].metrics["accuracy"].source == "SCORE_FLOOR"
    assert stages["speed_speed"].metrics["throughput_qps"].source == "LIMITS['qps']"
    assert stages["speed_wer"].metrics["corpus_wer"].source == "OTHER_MIN_ACCURACY"
    assert (
        "  tests/test_speed_ci.py: thresholds: MISSING is not a numeric constant there"
        in result.summary_lines
    )


def test_explicit_claim_beats_a_name_rule(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD
        + "metric_sources:\n"
        + "  test_speed_ci.py: {json_file: r.json, paths: {accuracy: a}}\n"
        + "thresholds:\n  test_speed_ci.py: {SCORE: accuracy}\n",
        {"tests/test_speed_ci.py": "X_MIN_ACCURACY = 0.5\nSCORE = 0.6\n"},
    )
    result = discover_model(model, tmp_path)
    assert result.stages["speed_accuracy"].metrics["accuracy"].source == "SCORE"
    assert (
        "  tests/test_speed_ci.py: X_MIN_ACCURACY not used for accuracy: "
        "thresholds: names SCORE" in result.summary_lines
    )


def test_config_metric_with_nested_key(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD
        + textwrap.dedent(
            """\
        metrics:
          tok_per_joule:
            worst: min
            label: "Tokens/J"
            group: efficiency
            digits: 1
            patterns: [".*TOK_PER_J_FLOOR"]
            nested_keys: [tok_per_j]
            integer: false
        metric_sources:
          test_speed_ci.py: {json_file: r.json, paths: {tok_per_joule: e.tpj}}
        """
        ),
        {
            "tests/test_speed_ci.py": (
                "A_TOK_PER_J_FLOOR = 3.5\n_P95 = {16: {'tok_per_j': 4.0}}\n"
            )
        },
    )
    with pytest.raises(ConfigError, match="both claim this metric"):
        discover_model(model, tmp_path)
    (tmp_path / "tests" / "test_speed_ci.py").write_text("A_TOK_PER_J_FLOOR = 3.5\n")
    stage = discover_model(model, tmp_path).stages["speed_efficiency"]
    metric = stage.metrics["tok_per_joule"]
    assert (metric.worst, metric.display.label, metric.display.digits) == (
        "min",
        "Tokens/J",
        1,
    )
    assert stage.title == "SPEED Efficiency"


VARIANT_TEST = """\
STREAMING_MAX_SAMPLES = 32
TTS_MAX_FAILED_REQUESTS = 16
TTS_MAX_FAILED_REQUESTS_ENV = "TTS_MAX_FAILED_REQUESTS"
VC_WER_MAX_CORPUS = 0.0106
VC_WER_CORPUS_THRESHOLD = apply_wer_slack(VC_WER_MAX_CORPUS)
VC_STREAM_WER_MAX_CORPUS = 0.0132
VC_SIMILARITY_MEAN_MIN = 60.0
_VC_NON_STREAM_P95 = {16: {"throughput_qps": 1.465, "rtf_mean": 3.0009}}
_VC_STREAM_P95 = {16: {"throughput_qps": 1.287}}

def test_stream():
    run(max_samples=STREAMING_MAX_SAMPLES)
"""

VARIANT_CONFIG = """\
name: m
test_globs: ["tests/test_*.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
pytest_extra_args:
  test_tts_ci.py: ["--concurrency", "16"]
metric_sources:
  test_tts_ci.py:
    sample_counts:
      total: "summary.total_requests"
      ok: "summary.total_requests"
    variants:
      nonstream:
        constant_filter: "^VC_(?!STREAM_).*|^VC_NON_STREAM.*|^TTS_MAX_FAILED_REQUESTS$"
        json_file: "ns0/speed_results.json"
        sample_counts_by_group:
          wer:
            total: "ns0/wer_results.json::per_sample.__len__"
            ok: "ns0/wer_results.json::summary.evaluated"
        paths:
          throughput_qps: "summary.throughput_qps"
          rtf_mean: "summary.rtf_mean"
          failed_requests: "summary.failed_requests"
          corpus_wer: "ns0/wer_results.json::summary.wer_corpus"
          similarity_mean: "ns0/sim.json::summary.speaker_similarity_mean"
      stream:
        constant_filter: "^VC_STREAM_.*|^TTS_MAX_FAILED_REQUESTS$"
        json_file: "s0/speed_results.json"
        paths:
          throughput_qps: "summary.throughput_qps"
          failed_requests: "summary.failed_requests"
"""


def test_variants(make: Make, tmp_path: Path) -> None:
    model = make(VARIANT_CONFIG, {"tests/test_tts_ci.py": VARIANT_TEST})
    result = discover_model(model, tmp_path)
    stages = result.stages
    assert list(stages) == [
        "tts_nonstream_reliability",
        "tts_nonstream_wer",
        "tts_nonstream_similarity",
        "tts_nonstream_speed",
        "tts_stream_reliability",
        "tts_stream_wer",
        "tts_stream_speed",
    ]
    ns_wer = stages["tts_nonstream_wer"]
    assert (ns_wer.title, ns_wer.base, ns_wer.variant) == (
        "TTS NONSTREAM Wer",
        "tts",
        "nonstream",
    )
    assert ns_wer.context_vars == ["STREAMING_MAX_SAMPLES"]
    assert ns_wer.pytest_extra_args == ["--concurrency", "16"]
    assert ns_wer.metrics["corpus_wer"].source == "VC_WER_MAX_CORPUS"
    assert ns_wer.metrics["corpus_wer"].json_file == "ns0/wer_results.json"
    assert ns_wer.sample_counts is not None
    assert ns_wer.sample_counts["total"].json_file == "ns0/wer_results.json"
    assert ns_wer.sample_counts["total"].json_path == "per_sample.__len__"
    speed = stages["tts_nonstream_speed"]
    assert speed.concurrency == 16
    assert speed.sample_counts is not None
    assert speed.sample_counts["ok"].json_file == "ns0/speed_results.json"
    assert (
        speed.metrics["rtf_mean"].location.ref == "_VC_NON_STREAM_P95[16]['rtf_mean']"
    )
    # One symbol claimed by two variants is one stage each.
    for key in ("tts_nonstream_reliability", "tts_stream_reliability"):
        failed = stages[key].metrics["failed_requests"]
        assert (failed.source, failed.integer, failed.current) == (
            "TTS_MAX_FAILED_REQUESTS",
            True,
            16,
        )
    # The stream variant has no corpus_wer path: NEEDS_CONFIG, and said so.
    stream_wer = stages["tts_stream_wer"].metrics["corpus_wer"]
    assert (stream_wer.status, stream_wer.json_path) == ("NEEDS_CONFIG", None)
    assert result.summary_lines[0] == (
        "[m] 7 stages written to models/m/stages.yaml, 7 metric(s) OK, 1 need config"
    )
    assert result.summary_lines[1:] == [
        "  tests/test_tts_ci.py: corpus_wer (VC_STREAM_WER_MAX_CORPUS) of "
        "tts_stream_wer has no JSON path in metric_sources (NEEDS_CONFIG)"
    ]


def test_variant_base_override_and_suffix(make: Make, tmp_path: Path) -> None:
    config = VARIANT_CONFIG.replace(
        '        json_file: "s0/speed_results.json"\n',
        '        json_file: "s0/speed_results.json"\n'
        "        stage_base_override: live\n"
        "        omit_variant_suffix: true\n"
        "        context_vars: [OTHER]\n",
    )
    model = make(config, {"tests/test_tts_ci.py": VARIANT_TEST})
    stages = discover_model(model, tmp_path).stages
    assert "live_speed" in stages
    assert stages["live_speed"].title == "LIVE STREAM Speed"
    assert stages["live_speed"].context_vars == ["OTHER"]


def test_threshold_file(make: Make, tmp_path: Path) -> None:
    config = HEAD + (
        "metric_sources:\n  test_speed_ci.py:\n    json_file: r.json\n"
        "    threshold_file: tests/limits.py\n"
        "    paths: {accuracy: summary.accuracy, throughput_qps: speed.tp}\n"
    )
    test = "from limits import *\n\ndef test_it():\n    run(max_samples=N)\n"
    limits = "N = 5\nSPEED_MIN_ACCURACY = 0.5\n_P95 = {16: {'throughput_qps': 2.0}}\n"
    model = make(config, {"tests/test_speed_ci.py": test, "tests/limits.py": limits})
    stages = discover_model(model, tmp_path).stages
    acc = stages["speed_accuracy"]
    loc = acc.metrics["accuracy"].location
    assert loc == Location("tests/limits.py", "SPEED_MIN_ACCURACY", line=2)
    assert acc.threshold_file == "tests/limits.py"
    assert acc.thresholds_file == "tests/limits.py"
    assert acc.test_logic_sha256 == logic_hash(test, [])
    locs = [loc, stages["speed_speed"].metrics["throughput_qps"].location]
    assert acc.threshold_logic_sha256 == logic_hash(limits, locs)
    assert acc.threshold_file_sha256 == file_sha256(limits.encode())
    assert load_stages(model.stages_path) == stages

    limits_file = tmp_path / "tests" / "limits.py"
    limits_file.write_text(limits.replace("0.5", "0.625"))
    assert check_fresh(stages, tmp_path) == []
    limits_file.write_text(limits + "EXTRA = 1\n")
    assert check_fresh(stages, tmp_path) == ["tests/limits.py"]


def test_docs_stage(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD.replace("tests/test_*.py", "tests/**/test_*.py")
        + "stage_base_docs_override: m_docs\n",
        {"tests/docs/test_readme.py": "def test_readme():\n    pass\n"},
    )
    stages = discover_model(model, tmp_path).stages
    docs = stages["m_docs"]
    assert (docs.group, docs.title, docs.metrics, docs.sample_counts) == (
        "docs",
        "Docs smoke",
        {},
        None,
    )
    assert load_stages(model.stages_path) == stages


def test_unused_config_keys_and_globs_are_reported(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD.replace('["tests/test_*.py"]', '["tests/test_*.py", "none/*.py"]')
        + "metric_sources:\n  test_sped_ci.py: {}\n"
        + "extra_env:\n  test_gone.py: {A: b}\n",
        {"tests/test_speed_ci.py": "X_MIN_ACCURACY = 0.5\n"},
    )
    lines = discover_model(model, tmp_path).summary_lines
    assert lines[1:] == [
        "  config: test_globs[1] 'none/*.py' matches no file",
        "  config: metric_sources.test_sped_ci.py matches no test file"
        " (did you mean 'test_speed_ci.py'?)",
        "  config: extra_env.test_gone.py matches no test file",
        "  tests/test_speed_ci.py: no metric_sources entry in config; its metrics "
        "need config",
        "  tests/test_speed_ci.py: accuracy (X_MIN_ACCURACY) of speed_accuracy has "
        "no JSON path in metric_sources (NEEDS_CONFIG)",
    ]


def test_bare_path_without_json_file_needs_config(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD + "metric_sources:\n  test_speed_ci.py: {paths: {accuracy: s.acc}}\n",
        {"tests/test_speed_ci.py": "X_MIN_ACCURACY = 0.5\n"},
    )
    result = discover_model(model, tmp_path)
    metric = result.stages["speed_accuracy"].metrics["accuracy"]
    assert (metric.status, metric.json_file, metric.json_path) == (
        "NEEDS_CONFIG",
        None,
        "s.acc",
    )
    assert "has no JSON json_file" in result.summary_lines[1]


def test_unparsable_test_file(make: Make, tmp_path: Path) -> None:
    model = make(HEAD, {"tests/test_bad.py": "X = (\n"})
    with pytest.raises(TuneError, match=r"tests/test_bad.py:1: cannot parse test file"):
        discover_model(model, tmp_path)


def test_thresholds_naming_a_dict_symbol(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD
        + "metric_sources:\n  test_speed_ci.py: {json_file: r.json}\n"
        + "thresholds:\n  test_speed_ci.py: {LIMITS: throughput_qps}\n",
        {"tests/test_speed_ci.py": "LIMITS = {'qps': 2.5}\n"},
    )
    result = discover_model(model, tmp_path)
    assert result.stages == {}
    assert result.summary_lines[1:] == [
        "  tests/test_speed_ci.py: thresholds: LIMITS is a dict of metrics; name "
        "its entries as LIMITS[inner_key]"
    ]


def test_clashing_stage_keys(make: Make, tmp_path: Path) -> None:
    model = make(
        HEAD.replace("tests/test_*.py", "tests/**/test_*.py"),
        {
            "tests/a/test_speed_ci.py": "X_MIN_ACCURACY = 0.5\n",
            "tests/b/test_speed_ci.py": "Y_MIN_ACCURACY = 0.5\n",
        },
    )
    with pytest.raises(TuneError) as info:
        discover_model(model, tmp_path)
    assert str(info.value).startswith(
        "stage key 'speed_accuracy' comes from both tests/a/test_speed_ci.py and "
        "tests/b/test_speed_ci.py; "
    )
