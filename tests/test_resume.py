"""Interrupted calibrations: resume, refusals, status, and kill -9 at random."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_model


CONFIG = """
name: m
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
  test_a_ci.py:
    json_file: "test_a0/res.json"
    paths: {accuracy: "acc", throughput_qps: "qps"}
  test_b_ci.py:
    json_file: "test_b0/res.json"
    paths: {corpus_wer: "wer"}
"""

SUITE = {
    "suite/test_a_ci.py": """
        import json, os, signal, time
        from pathlib import Path

        A_MIN_ACCURACY = 0.5
        _A_P95 = {1: {"throughput_qps": 2.0}}

        def test_a(tmp_path):
            k = int(os.environ["TUNE_CI_REPEAT"])
            marker = Path(os.environ["TUNE_CI_RUN_DIR"]) / "die-once"
            if k == 2 and os.environ.get("DIE_ONCE") and not marker.exists():
                marker.write_text("")
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(float(os.environ.get("SLOW", "0")))
            (tmp_path / "res.json").write_text(
                json.dumps({"acc": 0.6 + k / 100, "qps": 2.0 + k / 10}))
    """,
    "suite/test_b_ci.py": """
        import json, os, time

        B_WER_MAX_CORPUS = 0.1

        def test_b(tmp_path):
            k = int(os.environ["TUNE_CI_REPEAT"])
            time.sleep(float(os.environ.get("SLOW", "0")))
            (tmp_path / "res.json").write_text(json.dumps({"wer": 0.05 + k / 1000}))
    """,
}

STAGES = ("a_accuracy", "a_speed", "b_wer")


def runs(run_dir: Path) -> dict[tuple[str, int], dict[str, object]]:
    found = {}
    for stage in STAGES:
        for path in sorted((run_dir / stage).glob("run*.json")):
            found[(stage, int(path.stem[3:]))] = json.loads(path.read_text())
    return found


def test_resume_completes_without_rerunning_complete_stage_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    run_dir = pytester.path / "run"
    monkeypatch.setenv("DIE_ONCE", "1")
    first = pytester.runpytest_subprocess(
        "--tune-model", "m", "--tune-repeats", "3", f"--tune-output-dir={run_dir}"
    )
    assert first.ret == -signal.SIGKILL
    before = runs(run_dir)
    assert ("a_accuracy", 1) in before and ("a_accuracy", 2) not in before
    result = pytester.runpytest_subprocess("--tune-resume", str(run_dir))
    assert result.ret == 0, result.stdout.str()
    after = runs(run_dir)
    assert len(after) == 3 * len(STAGES)
    for key, record in before.items():
        assert after[key] == record  # complete stage-runs were not rerun
    status = pytester.runpytest_subprocess("--tune-status", str(run_dir))
    assert status.ret == 0
    data = json.loads(status.stdout.str())
    assert data["complete"] is True
    assert (data["ok"], data["total"], data["missing"]) == (9, 9, [])


def test_status_json_of_an_incomplete_run(pytester: pytest.Pytester) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    run_dir = pytester.path / "run"
    result = pytester.runpytest(
        "--tune-model", "m", "--tune-repeats", "2", f"--tune-output-dir={run_dir}"
    )
    assert result.ret == 0
    (run_dir / "b_wer" / "run2.json").unlink()
    (run_dir / "a_speed" / "run1.json").write_text("{half")
    status = pytester.runpytest_subprocess("--tune-status", str(run_dir))
    assert status.ret == 1
    data = json.loads(status.stdout.str())  # stdout holds the JSON and nothing else
    assert set(data) >= {
        "run_dir",
        "model",
        "repeats",
        "complete",
        "ok",
        "total",
        "missing",
        "stages",
        "activity",
    }
    assert data["model"] == "m" and data["repeats"] == 2
    assert (data["complete"], data["ok"], data["total"]) == (False, 4, 6)
    assert {(m["stage"], m["run"], m["reason"]) for m in data["missing"]} == {
        ("b_wer", 2, "missing file"),
        ("a_speed", 1, "corrupt json"),
    }
    assert data["stages"]["a_accuracy"] == {"ok": 2, "total": 2}


def test_resume_refuses_changed_test_logic_but_not_changed_thresholds(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    run_dir = pytester.path / "run"
    pytester.runpytest(
        "--tune-model", "m", "--tune-repeats", "1", f"--tune-output-dir={run_dir}"
    )
    test_a = pytester.path / "suite" / "test_a_ci.py"
    test_a.write_text(
        test_a.read_text().replace("A_MIN_ACCURACY = 0.5", "A_MIN_ACCURACY = 0.61")
    )
    ok = pytester.runpytest("--tune-resume", str(run_dir))
    assert ok.ret == 0, ok.stdout.str()
    test_a.write_text(test_a.read_text().replace("k / 100", "k / 50"))
    refused = pytester.runpytest("--tune-resume", str(run_dir))
    assert refused.ret == 1
    refused.stderr.fnmatch_lines(
        ["*cannot resume*test logic changed*suite/test_a_ci.py*"]
    )


def test_resume_keeps_the_plan_immutable(pytester: pytest.Pytester) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    run_dir = pytester.path / "run"
    pytester.runpytest(
        "--tune-model",
        "m",
        "--tune-repeats",
        "1",
        "--tune-stages",
        "a",
        f"--tune-output-dir={run_dir}",
    )
    again = pytester.runpytest(
        "--tune-model", "m", "--tune-repeats", "1", f"--tune-output-dir={run_dir}"
    )
    assert again.ret == 4
    again.stderr.fnmatch_lines(["*already holds a calibration plan*--tune-resume*"])
    repeats = pytester.runpytest("--tune-resume", str(run_dir), "--tune-repeats", "3")
    assert repeats.ret == 4
    repeats.stderr.fnmatch_lines(["*--tune-repeats 3 conflicts*1 repeats*immutable*"])
    outside = pytester.runpytest("--tune-resume", str(run_dir), "--tune-stages", "b")
    assert outside.ret == 4
    outside.stderr.fnmatch_lines(["*--tune-stages b: stages outside the plan*"])


def test_sigkill_at_random_points_then_resume_gives_exactly_n_runs(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    run_dir = pytester.path / "run"
    env = dict(os.environ, SLOW="0.15", PYTHONUNBUFFERED="1")
    rng = random.Random(1234)
    args = ["--tune-model", "m", "--tune-repeats", "3", f"--tune-output-dir={run_dir}"]
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=pytester.path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.6, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if (run_dir / "plan.json").exists():
            args = ["--tune-resume", str(run_dir)]
        if proc.returncode == 0:
            break
    else:
        final = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=pytester.path,
            env=env,
            capture_output=True,
            check=False,
        )
        assert final.returncode == 0, final.stdout
    assert kills >= 2
    found = runs(run_dir)
    assert sorted(found) == sorted((s, k) for s in STAGES for k in (1, 2, 3))
    assert all(r["status"] == "ok" for r in found.values())
    assert not list(run_dir.rglob("*.tune-tmp"))
