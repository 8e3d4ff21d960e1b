"""The GPU gate inside a calibration, on a simulated host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_model


CONFIG = """
name: m
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
gpu_wait_s: 1
metric_sources:
  test_g_ci.py:
    json_file: "test_g0/res.json"
    paths: {accuracy: "acc"}
"""

SUITE = {
    "suite/test_g_ci.py": """
        import json, os

        G_MIN_ACCURACY = 0.5

        def test_g(tmp_path):
            seen = {
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "order": os.environ.get("CUDA_DEVICE_ORDER"),
            }
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7, **seen}))
    """,
}


def gpu(index: int, used: int = 300, procs: list[dict[str, int]] | None = None) -> dict:
    return {
        "index": index,
        "name": "NVIDIA H20",
        "memory_total_mib": 97871,
        "memory_used_mib": used,
        "processes": procs or [],
    }


def record(pytester: pytest.Pytester) -> dict:
    path = pytester.path / "run" / "g_accuracy" / "run1.json"
    return json.loads(path.read_text())


def calibrate(pytester: pytest.Pytester, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--tune-model",
        "m",
        "--tune-repeats",
        "1",
        "--tune-gpus",
        "sim:gpus.json",
        "--tune-output-dir=run",
        "--tune-max-attempts=2",
        *extra,
    )


def test_a_foreign_process_is_never_signalled_and_the_attempt_waits(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        sim = {"gpus": [gpu(0, 17708, [{"pid": foreign.pid, "used_mib": 17408}])]}
        (pytester.path / "gpus.json").write_text(json.dumps(sim))
        # (The precheck would stop here already: it sees no free GPU.)
        result = calibrate(pytester, "--tune-skip-precheck", "--tune-max-passes=1")
        assert result.ret == 1
        assert foreign.poll() is None  # still running: nobody signalled it
        rec = record(pytester)
        assert rec["status"] == "incomplete"
        assert [a["outcome"] for a in rec["attempts"]] == ["gpu_not_clear"] * 2
        reason = rec["attempts"][0]["reason"]
        assert str(foreign.pid) in reason and "17408" in reason
        assert not (pytester.path / "run" / "_pytest").exists()  # never launched
    finally:
        foreign.kill()
        foreign.wait()


def test_a_stale_process_of_the_calibration_is_ended_and_the_repeat_starts(
    pytester: pytest.Pytester,
) -> None:
    files = dict(SUITE)
    # A process the calibrating pytest started before the repeat (like a
    # server left behind by an earlier run) holds GPU 0.
    files["conftest.py"] = """
        import json, subprocess, sys
        from pathlib import Path

        def pytest_configure(config):
            sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
            proc = subprocess.Popen(sleeper)
            Path("stale.pid").write_text(str(proc.pid))
            sim = {"gpus": [{"index": 0, "name": "NVIDIA H20",
                    "memory_total_mib": 97871, "memory_used_mib": 17708,
                    "processes": [{"pid": proc.pid, "used_mib": 17408}]}]}
            Path("gpus.json").write_text(json.dumps(sim))
    """
    write_model(pytester, "m", CONFIG, files)
    (pytester.path / "gpus.json").write_text(json.dumps({"gpus": [gpu(0)]}))
    result = calibrate(pytester)
    assert result.ret == 0, result.stdout.str()
    stale = int((pytester.path / "stale.pid").read_text())
    assert not _alive(stale)
    rec = record(pytester)
    assert [a["outcome"] for a in rec["attempts"]] == ["ok"]
    assert rec["gpus"] == [0]
    log = (pytester.path / "run" / "run.log").read_text()
    assert f"ended stale calibration process(es) [{stale}]" in log


def test_cuda_visible_devices_maps_through_the_outer_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    sim = {"gpus": [gpu(0), gpu(1), gpu(2, used=50000), gpu(3)]}
    (pytester.path / "gpus.json").write_text(json.dumps(sim))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    result = calibrate(pytester)
    assert result.ret == 0, result.stdout.str()
    rec = record(pytester)
    assert rec["gpus"] == [3]  # physical index; GPU 2 is busy, 0 and 1 not ours
    seen = json.loads((Path(rec["basetemp"]) / "test_g0" / "res.json").read_text())
    assert seen["visible"] == "1"  # position of GPU 3 in the outer list
    assert seen["order"] == "PCI_BUS_ID"


def test_a_failing_precheck_stops_before_any_gpu_time(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    (pytester.path / "gpus.json").write_text(json.dumps({"gpus": [gpu(0)]}))
    pytester.makepyprojecttoml(
        """
        [project]
        name = "under-test"
        version = "0"
        dependencies = ["no-such-package-xyz==1.2.3"]
        """
    )
    result = calibrate(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*precheck*no-such-package-xyz*"])
    assert not (pytester.path / "run" / "plan.json").exists()
    assert (pytester.path / "run" / "precheck.json").exists()
    skipped = calibrate(pytester, "--tune-skip-precheck")
    assert skipped.ret == 0, skipped.stdout.str()


def test_without_a_driver_the_gate_is_off_with_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(pytester, "m", CONFIG, SUITE)
    monkeypatch.delenv("TUNE_CI_GPUS", raising=False)
    result = pytester.runpytest_subprocess(
        "--tune-model", "m", "--tune-repeats", "1", "--tune-output-dir=run"
    )
    assert result.ret == 0, result.stdout.str()
    notices = [line for line in result.stdout.lines if "GPU gate off" in line]
    assert len(notices) == 1, notices


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"
