from __future__ import annotations

import pytest

from pytest_tune_ci.metrics import BUILTIN
from pytest_tune_ci.metrics import MetricUpdate
from pytest_tune_ci.metrics import is_derived_name


# key: (worst, label, digits, scale, group), as the legacy report shows them.
LEGACY_SPECS = {
    "accuracy": ("min", "Acc (%)", 2, 100, "accuracy"),
    "corpus_wer": ("max", "Corpus WER (%)", 2, 100, "wer"),
    "per_sample_wer_max": ("max", "Max per-sample WER (%)", 2, 100, "wer"),
    "wer_below_50_corpus": ("max", "Corpus WER ≤50% (%)", 2, 100, "wer"),
    "n_above_50": ("max", "Samples >50% WER", 0, 1, "wer"),
    "throughput_qps": ("min", "Throughput (req/s)", 3, 1, "speed"),
    "output_tok_per_req_s": ("min", "Output tok/req-s", 1, 1, "speed"),
    "latency_mean_s": ("max", "Latency mean (s)", 3, 1, "speed"),
    "latency_p95_s": ("max", "Latency p95 (s)", 3, 1, "speed"),
    "rtf_mean": ("max", "RTF mean", 4, 1, "speed"),
    "rtf_p95": ("max", "RTF p95", 4, 1, "speed"),
    "failed_requests": ("max", "Failed requests", 0, 1, "reliability"),
    "similarity_mean": ("min", "Speaker sim mean", 4, 1, "similarity"),
    "utmos_mean": ("min", "UTMOS mean", 4, 1, "utmos"),
}

# Later rows: key -> (worst, digits, scale, group); labels are ours.
LATER_SPECS = {
    "cer_percent": ("max", 2, 1, "diarization"),
    "cer_no_spk_percent": ("max", 2, 1, "diarization"),
    "cp_cer_percent": ("max", 2, 1, "diarization"),
    "cer_no_spk_cp_valid_percent": ("max", 2, 1, "diarization"),
    "delta_cer_percent": ("max", 2, 1, "diarization"),
    "cer_no_spk_below_50_corpus": ("max", 2, 1, "diarization"),
    "speaker_timestamp_der_percent": ("max", 2, 1, "diarization"),
    "n_above_50_pct_cer": ("max", 0, 1, "diarization"),
    "cer_valid_samples": ("min", 0, 1, "diarization"),
    "cp_cer_valid_samples": ("min", 0, 1, "diarization"),
    "completion_tokens_min": ("min", 0, 1, "speed"),
    "prompt_tokens_min": ("min", 0, 1, "speed"),
    "audio_duration_min_s": ("min", 3, 1, "speed"),
    "latency_max_s": ("max", 3, 1, "speed"),
    "ttfa_p95_s": ("max", 4, 1, "speed"),
    "text_ttft_p95_s": ("max", 4, 1, "speed"),
    "inter_chunk_p95_s": ("max", 4, 1, "speed"),
}

COUNTS = {
    "n_above_50",
    "failed_requests",
    "n_above_50_pct_cer",
    "cer_valid_samples",
    "cp_cer_valid_samples",
    "completion_tokens_min",
    "prompt_tokens_min",
}


@pytest.mark.parametrize("key", sorted(LEGACY_SPECS))
def test_legacy_spec(key: str) -> None:
    spec = BUILTIN[key]
    assert (spec.worst, spec.label, spec.digits, spec.scale, spec.group) == (
        LEGACY_SPECS[key]
    )
    assert spec.display.label == spec.label


@pytest.mark.parametrize("key", sorted(LATER_SPECS))
def test_later_spec(key: str) -> None:
    spec = BUILTIN[key]
    assert (spec.worst, spec.digits, spec.scale, spec.group) == LATER_SPECS[key]
    assert spec.label


def test_registry_is_exactly_the_listed_metrics() -> None:
    assert set(BUILTIN.keys) == set(LEGACY_SPECS) | set(LATER_SPECS)
    assert {k for k in BUILTIN.keys if BUILTIN[k].integer} == COUNTS


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        # qwen3-omni suite
        ("MMMU_MIN_ACCURACY", "accuracy"),
        ("VIDEOAMME_TALKER_TP2_THINKER_TEXT_MIN_ACCURACY", "accuracy"),
        ("X_ACC_MIN", "accuracy"),
        ("MMMU_AUDIO_WER_BELOW_50_CORPUS_MAX", "wer_below_50_corpus"),
        ("MMMU_AUDIO_N_ABOVE_50_MAX", "n_above_50"),
        ("VC_WER_BELOW_50_CORPUS_MAX", "wer_below_50_corpus"),
        ("VC_N_ABOVE_50_MAX", "n_above_50"),
        ("QWEN3_OMNI_SEEDTTS_RTF_MEAN_MAX", "rtf_mean"),
        ("VC_SIMILARITY_MEAN_MIN", "similarity_mean"),
        ("VC_UTMOS_MEAN_REFERENCE", "utmos_mean"),
        # s2-pro and tts suites
        ("VC_WER_MAX_CORPUS", "corpus_wer"),
        ("VC_WER_MAX_PER_SAMPLE", "per_sample_wer_max"),
        ("VC_STREAM_WER_MAX_CORPUS", "corpus_wer"),
        ("VC_STREAM_WER_MAX_PER_SAMPLE", "per_sample_wer_max"),
        ("TTS_MAX_FAILED_REQUESTS", "failed_requests"),
        ("HIGGS_VC_WER_MAX_CORPUS", "corpus_wer"),
        # later name rules
        ("X_CORPUS_WER_MAX", "corpus_wer"),
        ("X_SAMPLE_WER_MAX", "per_sample_wer_max"),
        ("X_THROUGHPUT_MIN", "throughput_qps"),
        ("X_THROUGHPUT_QPS", "throughput_qps"),
        ("X_LATENCY_P95_MAX", "latency_p95_s"),
        ("X_LATENCY_MAX", "latency_max_s"),
        ("X_RTF_P95_MAX", "rtf_p95"),
        ("X_PROMPT_TOKENS_MIN", "prompt_tokens_min"),
        ("X_AUDIO_DURATION_MIN_S", "audio_duration_min_s"),
        ("X_TTFA_P95_MAX", "ttfa_p95_s"),
        ("X_CP_CER_VALID_SAMPLES_MIN", "cp_cer_valid_samples"),
        ("X_CER_VALID_SAMPLES_MIN", "cer_valid_samples"),
        ("X_CER_NO_SPK_CP_VALID_PERCENT_MAX", "cer_no_spk_cp_valid_percent"),
        ("X_N_ABOVE_50_CER_REF", "n_above_50_pct_cer"),
        ("X_CER_PERCENT_MAX", "cer_percent"),
        ("_LEADING_UNDERSCORE_MIN_ACCURACY", "accuracy"),
    ],
)
def test_name_rules(name: str, metric: str) -> None:
    assert BUILTIN.match_name(name) == metric


@pytest.mark.parametrize(
    "name",
    [
        "CONCURRENCY",
        "MAX_SAMPLES",
        "MAX_TOKENS",
        "STREAMING_BENCHMARK_MAX_SAMPLES",
        "WER_TIMEOUT",
        "SIMILARITY_TIMEOUT",
        "THRESHOLD_SLACK_HIGHER",
        "THRESHOLD_SLACK_LOWER",
        "VC_WER_CORPUS_THRESHOLD",
        "MMMU_AUDIO_WER_BELOW_50_CORPUS_THRESHOLD",
        "ACCURACY",  # says nothing about direction
    ],
)
def test_names_that_are_not_thresholds(name: str) -> None:
    assert BUILTIN.match_name(name) is None


def test_derived_names() -> None:
    assert is_derived_name("VC_WER_CORPUS_THRESHOLD")
    assert is_derived_name("_X_THRESHOLD")
    assert is_derived_name("THRESHOLD_SLACK_HIGHER")
    assert not is_derived_name("VC_WER_MAX_CORPUS")


@pytest.mark.parametrize(
    ("inner", "metric"),
    [
        ("throughput_qps", "throughput_qps"),
        ("output_tok_per_req_s", "output_tok_per_req_s"),
        ("latency_mean_s", "latency_mean_s"),
        ("latency_p95_s", "latency_p95_s"),
        ("rtf_mean", "rtf_mean"),
        ("rtf_p95", "rtf_p95"),
        ("accuracy", None),  # never nested in the legacy suites
        ("throughput_qps_min", None),
    ],
)
def test_nested_keys(inner: str, metric: str | None) -> None:
    assert BUILTIN.match_nested(inner) == metric


def test_extended_adds_a_metric_and_patterns() -> None:
    reg = BUILTIN.extended(
        {
            "tokens_per_joule": MetricUpdate(
                worst="min",
                label="Tokens/J",
                group="efficiency",
                digits=1,
                patterns=(r".*TOK_PER_J_MIN",),
                nested_keys=("tok_per_j",),
            ),
            # A name that says nothing, claimed for an existing metric.
            "accuracy": MetricUpdate(patterns=(r"SCORE_FLOOR",)),
        }
    )
    assert reg.match_name("DEMO_TOK_PER_J_MIN") == "tokens_per_joule"
    assert reg.match_nested("tok_per_j") == "tokens_per_joule"
    assert reg.match_name("SCORE_FLOOR") == "accuracy"
    assert reg["tokens_per_joule"].group == "efficiency"
    assert "efficiency" in reg.groups
    assert reg["accuracy"].patterns[-1] == "SCORE_FLOOR"
    # The built-in registry is untouched.
    assert BUILTIN.match_name("SCORE_FLOOR") is None
    assert "tokens_per_joule" not in BUILTIN


def test_added_patterns_win_over_builtin_rules() -> None:
    reg = BUILTIN.extended(
        {"latency_p95_s": MetricUpdate(patterns=(r".*RTF_MEAN_MAX",))}
    )
    assert reg.match_name("X_RTF_MEAN_MAX") == "latency_p95_s"


def test_new_metric_needs_direction_label_group() -> None:
    with pytest.raises(ValueError, match="needs worst"):
        BUILTIN.extended({"new_one": MetricUpdate(label="x")})
