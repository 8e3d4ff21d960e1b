"""Discovery over the real sglang-omni CI tests (opt-in).

Set ``TUNE_CI_SGLANG_ROOT`` to an sglang-omni checkout at the legacy tool's
V0.4 commit (28727e6) to run these. The expected stages are those of the
legacy stages.yaml files of that commit, with the concurrency level that the
legacy format dropped added to each nested source.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pytest_tune_ci.config import load_model
from pytest_tune_ci.discover import check_fresh
from pytest_tune_ci.discover import discover_stages
from pytest_tune_ci.stages import dump_stages
from pytest_tune_ci.stages import load_stages


REPO = Path(__file__).resolve().parent.parent
ROOT = os.environ.get("TUNE_CI_SGLANG_ROOT")
# The legacy tool's files, in the shared folder beside the checkout.
LEGACY_REF = Path(
    os.environ.get(
        "TUNE_CI_LEGACY_REF", str(REPO.parent / "shared" / "reference" / "sglang-omni")
    )
)

pytestmark = pytest.mark.skipif(
    not ROOT, reason="set TUNE_CI_SGLANG_ROOT to an sglang-omni checkout"
)


def _speed(symbol: str, level: int, *, rtf: bool) -> list[str]:
    keys = ["throughput_qps", "output_tok_per_req_s", "latency_mean_s"]
    keys += ["rtf_mean"] if rtf else []
    return [f"{symbol}[{level}][{key!r}]" for key in keys]


def _plain(base: str, prefix: str) -> dict[str, list[str]]:
    return {
        f"{base}_accuracy": [f"{prefix}_MIN_ACCURACY"],
        f"{base}_speed": _speed(f"_{prefix}_P95", 16, rtf=False),
    }


def _talker(
    base: str, acc: str, wer: str, p95: str, level: int = 16
) -> dict[str, list[str]]:
    return {
        f"{base}_accuracy": [acc],
        f"{base}_wer": [f"{wer}_WER_BELOW_50_CORPUS_MAX", f"{wer}_N_ABOVE_50_MAX"],
        f"{base}_speed": _speed(p95, level, rtf=True),
    }


EXPECTED: dict[str, dict[str, list[str]]] = {
    "qwen3-omni-v1": {
        **_plain("mmmu", "MMMU"),
        **_talker(
            "mmmu_talker", "MMMU_AUDIO_MIN_ACCURACY", "MMMU_AUDIO", "_MMMU_AUDIO_P95"
        ),
        **_plain("mmsu", "MMSU"),
        **_talker(
            "mmsu_talker", "MMSU_AUDIO_MIN_ACCURACY", "MMSU_AUDIO", "_MMSU_AUDIO_P95"
        ),
        "tts_wer": ["VC_WER_BELOW_50_CORPUS_MAX", "VC_N_ABOVE_50_MAX"],
        "tts_speed": _speed("_VC_NON_STREAM_P95", 16, rtf=True),
        **_plain("videoamme", "VIDEOAMME"),
        **_talker(
            "videoamme_talker",
            "VIDEOAMME_TALKER_THINKER_TEXT_MIN_ACCURACY",
            "VIDEOAMME_TALKER",
            "_VIDEOAMME_TALKER_AUDIO_P95",
        ),
        **_talker(
            "videoamme_talker_tp2",
            "VIDEOAMME_TALKER_TP2_THINKER_TEXT_MIN_ACCURACY",
            "VIDEOAMME_TALKER_TP2",
            "_VIDEOAMME_TALKER_TP2_AUDIO_P95",
            level=8,
        ),
        **_plain("videomme", "VIDEOMME"),
        **_talker(
            "videomme_talker",
            "VIDEOMME_TALKER_THINKER_TEXT_MIN_ACCURACY",
            "VIDEOMME_TALKER",
            "_VIDEOMME_TALKER_AUDIO_P95",
        ),
    },
    "s2-pro-v1": {
        "tts_nonstream_wer": ["VC_WER_MAX_CORPUS", "VC_WER_MAX_PER_SAMPLE"],
        "tts_nonstream_speed": _speed("_VC_NON_STREAM_P95", 16, rtf=True),
        "tts_stream_wer": ["VC_STREAM_WER_MAX_CORPUS", "VC_STREAM_WER_MAX_PER_SAMPLE"],
        "tts_stream_speed": _speed("_VC_STREAM_P95", 16, rtf=True),
    },
}


@pytest.fixture(scope="module")
def root() -> Path:
    assert ROOT is not None
    return Path(ROOT)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_discovered_stages_match_the_legacy_ones(
    name: str, root: Path, tmp_path: Path
) -> None:
    # A copy of the model, so the bundled stages.yaml is never overwritten.
    shutil.copytree(REPO / "models" / name, tmp_path / name)
    model = load_model(tmp_path, name, root)
    stages, _ = discover_stages(model, root)
    assert len(stages) == {"qwen3-omni-v1": 25, "s2-pro-v1": 4}[name]
    found = {
        key: [m.location.ref for m in stage.metrics.values()]
        for key, stage in stages.items()
    }
    assert found == EXPECTED[name]
    assert list(found) == list(EXPECTED[name])
    for stage in stages.values():
        assert stage.not_calibrated == []
        expected_level = 8 if "tp2" in stage.key else 16
        assert stage.concurrency == expected_level


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_stages_are_current(name: str, root: Path, tmp_path: Path) -> None:
    shutil.copytree(REPO / "models" / name, tmp_path / name)
    model = load_model(tmp_path, name, root)
    stages, _ = discover_stages(model, root)
    bundled = REPO / "models" / name / "stages.yaml"
    assert bundled.read_text(encoding="utf-8") == dump_stages(stages)
    assert check_fresh(load_stages(bundled), root) == []


@pytest.mark.skipif(not LEGACY_REF.is_dir(), reason="no legacy reference files")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expectations_are_the_legacy_stages(name: str) -> None:
    legacy = load_stages(LEGACY_REF / name / "stages.yaml")
    expected = {
        key: [ref.replace("[16]", "").replace("[8]", "") for ref in refs]
        for key, refs in EXPECTED[name].items()
    }
    assert {k: [m.source for m in s.metrics.values()] for k, s in legacy.items()} == (
        expected
    )
