"""Calibrations spread over pytest-xdist workers and simulated GPUs."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path

import pytest
from conftest import write_model


FILES = 4
CONFIG = """
name: m
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
gpu_wait_s: 60
metric_sources:
""" + "".join(
    f"""  test_f{i}_ci.py:
    json_file: "test_f{i}0/res.json"
    paths: {{accuracy: "acc"}}
"""
    for i in range(FILES)
)

SUITE = {
    f"suite/test_f{i}_ci.py": f"""
        import json, os, random, signal, time
        from pathlib import Path

        F{i}_MIN_ACCURACY = 0.5

        def test_f{i}(tmp_path):
            k = os.environ["TUNE_CI_REPEAT"]
            marker = Path(os.environ["TUNE_CI_RUN_DIR"]) / "killed-worker"
            if {i} == 1 and k == "2" and os.environ.get("KILL_WORKER"):
                if not marker.exists():
                    marker.write_text("")
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.3)
            value = random.Random(f"{i}-{{k}}").uniform(0.6, 0.9)
            (tmp_path / "res.json").write_text(json.dumps({{"acc": value}}))
    """
    for i in range(FILES)
}


def sim_gpus(path: Path, count: int) -> None:
    gpus = [
        {
            "index": i,
            "name": "NVIDIA H20",
            "memory_total_mib": 97871,
            "memory_used_mib": 300,
            "processes": [],
        }
        for i in range(count)
    ]
    path.write_text(json.dumps({"gpus": gpus}))


def records(run_dir: Path) -> dict[tuple[str, int], dict[str, object]]:
    found = {}
    for path in run_dir.glob("*/run*.json"):
        found[(path.parent.name, int(path.stem[3:]))] = json.loads(path.read_text())
    return found


def _t(text: object) -> datetime:
    return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    write_model(pytester, "m", CONFIG, SUITE)
    sim_gpus(pytester.path / "gpus.json", 4)
    return pytester


def test_four_workers_match_a_serial_run_and_never_share_a_gpu(
    project: pytest.Pytester,
) -> None:
    common = [
        "--tune-model",
        "m",
        "--tune-repeats",
        "3",
        "--tune-gpus",
        "sim:gpus.json",
    ]
    serial = project.runpytest_subprocess(*common, "--tune-output-dir=serial")
    assert serial.ret == 0, serial.stdout.str()
    par = project.runpytest_subprocess(*common, "-n", "4", "--tune-output-dir=par")
    assert par.ret == 0, par.stdout.str()
    one, four = records(project.path / "serial"), records(project.path / "par")
    assert (
        sorted(one)
        == sorted(four)
        == sorted((f"f{i}_accuracy", k) for i in range(FILES) for k in (1, 2, 3))
    )
    for key in one:
        assert one[key]["metrics"] == four[key]["metrics"]
        assert four[key]["status"] == "ok"
    workers = {r["worker"] for r in four.values()}
    assert len(workers) > 1 and "main" not in workers
    # While an attempt runs, its GPUs are leased to it alone.
    spans = []
    for record in four.values():
        for attempt in record["attempts"]:  # type: ignore[attr-defined]
            start = _t(attempt["started_at"]).timestamp()
            spans.append((start, start + attempt["duration_s"], set(attempt["gpus"])))
    overlapping = 0
    for (s1, e1, g1), (s2, e2, g2) in itertools.combinations(spans, 2):
        if s1 < e2 and s2 < e1:
            overlapping += 1
            assert not g1 & g2, (s1, e1, g1, s2, e2, g2)
    assert overlapping > 0  # the runs really ran at the same time
    par.stdout.fnmatch_lines(["*f1_accuracy run 3/3 ok*"])


def test_a_killed_worker_s_stage_run_is_run_again(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILL_WORKER", "1")
    result = project.runpytest_subprocess(
        "--tune-model",
        "m",
        "--tune-repeats",
        "2",
        "--tune-gpus",
        "sim:gpus.json",
        "-n",
        "2",
        "--tune-output-dir=run",
    )
    assert (project.path / "run" / "killed-worker").exists()
    assert result.ret == 0, result.stdout.str()
    found = records(project.path / "run")
    assert len(found) == FILES * 2
    assert all(r["status"] == "ok" for r in found.values())


def test_exclusive_groups_run_alone_and_n_auto_uses_free_gpu_groups(
    pytester: pytest.Pytester,
) -> None:
    config = CONFIG.replace(
        "gpu_wait_s: 60", "gpu_wait_s: 60\nexclusive_groups: [speed]"
    )
    config += """  test_s_ci.py:
    json_file: "test_s0/res.json"
    paths: {throughput_qps: "qps"}
"""
    files = dict(SUITE)
    files["suite/test_s_ci.py"] = """
        import json, time
        _S_P95 = {1: {"throughput_qps": 2.0}}

        def test_s(tmp_path):
            time.sleep(0.3)
            (tmp_path / "res.json").write_text(json.dumps({"qps": 2.5}))
    """
    write_model(pytester, "m", config, files)
    sim_gpus(pytester.path / "gpus.json", 3)  # -n auto: one worker per free GPU
    result = pytester.runpytest_subprocess(
        "--tune-model",
        "m",
        "--tune-repeats",
        "2",
        "--tune-gpus",
        "sim:gpus.json",
        "-n",
        "auto",
        "--tune-output-dir=run",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*3 workers*"])
    found = records(pytester.path / "run")
    speed = [r for (stage, _k), r in found.items() if stage == "s_speed"]
    others = [r for (stage, _k), r in found.items() if stage != "s_speed"]
    assert len(speed) == 2 and len(others) == FILES * 2
    for s in speed:
        for o in others:
            assert _t(s["finished_at"]) <= _t(o["started_at"]) or _t(
                o["finished_at"]
            ) <= _t(s["started_at"]), "a speed stage-run overlapped another"


def test_narrowing_by_keyword_is_refused_with_workers(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest(
        "--tune-model", "m", "--tune-repeats", "1", "-n", "2", "-k", "f1"
    )
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*with -n cannot be narrowed by -k*--tune-stages*"])
    assert not (project.path / ".tune-runs").exists()
