"""Voice-clone TTS CI (demo): speed first, then WER of the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FakeServer
from conftest import noise


VC_WER_MAX_CORPUS = 0.031
VC_WER_MAX_PER_SAMPLE: float = 0.2
VC_N_ABOVE_50_MAX = 0
_VC_NON_STREAM_P95 = {8: {"throughput_qps": 3.1, "rtf_mean": 0.42}}

SAMPLES = 24


@pytest.fixture(scope="module")
def vc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vc_nonstream")


def test_voice_cloning_speed(server: FakeServer, vc_dir: Path) -> None:
    rng = noise("tts-speed")
    summary = {
        "completed_requests": SAMPLES,
        "throughput_qps": round(rng.gauss(3.3, 0.15), 3),
        "rtf_mean": round(rng.gauss(0.40, 0.02), 4),
    }
    (vc_dir / "speed_results.json").write_text(json.dumps({"summary": summary}))
    p95 = _VC_NON_STREAM_P95[8]
    assert summary["throughput_qps"] >= p95["throughput_qps"] * 0.75
    assert summary["rtf_mean"] <= p95["rtf_mean"] * 1.25


def test_voice_cloning_wer(server: FakeServer, vc_dir: Path) -> None:
    rng = noise("tts-wer")
    wers = [max(0.0, rng.gauss(0.02, 0.03)) for _ in range(SAMPLES)]
    summary = {
        "total_samples": SAMPLES,
        "evaluated": SAMPLES,
        "wer_corpus": round(sum(wers) / len(wers), 6),
        "wer_per_sample_max": round(max(wers), 6),
        "n_above_50_pct_wer": sum(w > 0.5 for w in wers),
    }
    (vc_dir / "wer_results.json").write_text(json.dumps({"summary": summary}))
    assert summary["wer_corpus"] <= VC_WER_MAX_CORPUS * 1.25
    assert summary["wer_per_sample_max"] <= VC_WER_MAX_PER_SAMPLE * 1.25
    assert summary["n_above_50_pct_wer"] <= VC_N_ABOVE_50_MAX
