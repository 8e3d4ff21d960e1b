"""MMLU-style accuracy and speed CI (demo): one server, one benchmark run."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import FakeServer
from conftest import noise


CONCURRENCY = 4
MAX_SAMPLES = 40

MMLU_MIN_ACCURACY = 0.7

# Per-concurrency speed references; CI asserts them with slack.
_MMLU_P95 = {
    4: {
        "throughput_qps": 11.5,  # requests per second
        "latency_mean_s": 0.31,
    },
    8: {"throughput_qps": 19.0, "latency_mean_s": 0.52},
}


def _slack(p95: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    return {
        c: {
            "throughput_qps": round(v["throughput_qps"] * 0.875, 2),
            "latency_mean_s": round(v["latency_mean_s"] * 1.125, 2),
        }
        for c, v in p95.items()
    }


MMLU_THRESHOLDS = _slack(_MMLU_P95)


def test_mmlu_accuracy_and_speed(server: FakeServer, tmp_path: Path) -> None:
    rng = noise("mmlu")
    correct = sum(rng.random() < 0.74 for _ in range(MAX_SAMPLES))
    results = {
        "summary": {
            "total_samples": MAX_SAMPLES,
            "correct": correct,
            "accuracy": round(correct / MAX_SAMPLES, 4),
        },
        "speed": {
            "completed_requests": MAX_SAMPLES,
            "throughput_qps": round(rng.gauss(12.0, 0.4), 3),
            "latency_mean_s": round(rng.gauss(0.29, 0.01), 3),
        },
        "config": {"max_concurrency": CONCURRENCY, "port": server.port},
    }
    out = tmp_path / "mmlu"
    out.mkdir()
    (out / "mmlu_results.json").write_text(json.dumps(results, indent=2))
    summary = results["summary"]
    speed = results["speed"]
    limits = MMLU_THRESHOLDS[CONCURRENCY]
    assert summary["accuracy"] >= MMLU_MIN_ACCURACY, summary
    assert speed["throughput_qps"] >= limits["throughput_qps"], speed
    assert speed["latency_mean_s"] <= limits["latency_mean_s"], speed
