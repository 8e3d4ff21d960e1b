"""The bundled demo, end to end: calibrate, read the report, apply, rerun."""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path

import pytest

from pytest_tune_ci.literals import read_values
from pytest_tune_ci.stages import Location


def _runs(run_dir: Path, stage: str) -> list[dict[str, object]]:
    return [
        json.loads((run_dir / stage / f"run{k}.json").read_text()) for k in (1, 2, 3)
    ]


def _floor(value: float, scale: float, digits: int) -> float:
    step = 10.0**-digits
    return math.floor(round(value * scale / step, 9)) * step / scale


def _ceil(value: float, scale: float, digits: int) -> float:
    step = 10.0**-digits
    return math.ceil(round(value * scale / step, 9)) * step / scale


@pytest.fixture
def calibrated(demo_project: pytest.Pytester) -> Path:
    result = demo_project.runpytest_subprocess(
        "--tune-model",
        "demo",
        "--tune-repeats",
        "3",
        "--tune-gpus",
        "none",
        "--tune-output-dir=run",
    )
    assert result.ret == 0, result.stdout.str()
    # The demo's host fails once with an OOM and once with a crashed server.
    result.stdout.fnmatch_lines(
        [
            "*test_demo_flaky_ci run 1/3 attempt 1: oom*retrying*",
            "*test_demo_flaky_ci run 2/3 attempt 1: crash*server.log*retrying*",
            "*complete: 15/15 stage-runs*",
        ]
    )
    return demo_project.path / "run"


def test_report_sections_match_the_observations(calibrated: Path) -> None:
    report = (calibrated / "report.md").read_text()
    runs = _runs(calibrated, "mmlu_accuracy")
    accuracies = [float(r["metrics"]["accuracy"]) for r in runs]  # type: ignore[index]
    match = re.search(r"^## \d+\. MMLU Accuracy$(.*?)(?=^## )", report, re.M | re.S)
    assert match is not None
    section = match.group(1)
    for k, value in enumerate(accuracies, start=1):
        assert re.search(rf"^\| {k} \| 40 \| 40 \| {value * 100:.2f} \|", section, re.M)
    worst = min(accuracies)
    assert f"| **Worst-of-3** | — | — | **{worst * 100:.2f}** |" in section
    data = json.loads((calibrated / "report.json").read_text())
    stage = next(s for s in data["stages"] if s["stage_key"] == "mmlu_accuracy")
    (metric,) = stage["metrics"]
    assert metric["per_run_raw"] == accuracies
    assert metric["current_raw"] == 0.7
    assert metric["proposed"] == pytest.approx(_floor(worst, 100, 2))
    speed = next(s for s in data["stages"] if s["stage_key"] == "tts_speed")
    rtf = next(m for m in speed["metrics"] if m["metric_key"] == "rtf_mean")
    rtfs = [float(r["metrics"]["rtf_mean"]) for r in _runs(calibrated, "tts_speed")]  # type: ignore[index]
    assert rtf["proposed"] == pytest.approx(_ceil(max(rtfs), 1, 4))
    assert rtf["proposed"] >= max(rtfs)
    # Reliability counts the demo's two infrastructure retries.
    assert "oom" in report and "crash" in report
    flaky = next(s for s in data["stages"] if s["stage_key"] == "flaky_accuracy")
    assert flaky["reliability"]["retries"] == {"crash": 1, "oom": 1}


def test_apply_full_then_the_demo_passes_at_its_observed_worst(
    demo_project: pytest.Pytester, calibrated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = demo_project.path / "examples" / "demo"
    before = {p.name: p.read_text() for p in demo.glob("test_*.py")}
    result = demo_project.runpytest_subprocess(
        "--tune-apply", str(calibrated), "--tune-apply-mode", "full"
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert (
        "examples/demo/test_demo_mmlu_ci.py:_MMLU_P95[4]['throughput_qps'] = "
        in result.stdout.str()
    )
    after = {p.name: p.read_text() for p in demo.glob("test_*.py")}
    plan = json.loads((calibrated / "report.json").read_text())
    written = [
        m
        for s in plan["stages"]
        for m in s["metrics"]
        if m["direction"] not in ("equal", "unknown", "fixed")
    ]
    assert len(written) >= 5
    for m in written:
        loc = m["location"]
        source = (demo_project.path / loc["file"]).read_text()
        where = Location(loc["file"], loc["symbol"], loc["outer_key"], loc["inner_key"])
        value = read_values(source, [where])[where]
        assert value == m["proposed"] and type(value) is type(m["proposed"])
    for name, text in before.items():
        diff = [
            line
            for line in difflib.ndiff(text.splitlines(), after[name].splitlines())
            if line.startswith(("-", "+"))
        ]
        # Only lines holding a threshold literal changed, one for one.
        for removed, added in zip(diff[::2], diff[1::2], strict=True):
            assert removed.startswith("- ") and added.startswith("+ ")
            old = re.sub(r"-?\d[\d_.e-]*", "#", removed[2:])
            new = re.sub(r"-?\d[\d_.e-]*", "#", added[2:])
            assert old == new, (removed, added)
    # The 8 keys of the other concurrency level are untouched.
    assert (
        '8: {"throughput_qps": 19.0, "latency_mean_s": 0.52}'
        in after["test_demo_mmlu_ci.py"]
    )
    report = (calibrated / "report.md").read_text()
    assert report.index("## Applied changes") < report.index("## Provenance")
    # Stages do not go stale: the thresholds are not the test's logic.
    again = demo_project.runpytest_subprocess(
        "--tune-apply", str(calibrated), "--tune-apply-mode", "full"
    )
    assert again.ret == 0
    assert {p.name: p.read_text() for p in demo.glob("test_*.py")} == after
    # Rerun the suite normally, seeded like each calibrated repeat: every
    # repeat passes now, the worst one included (repeat 2 failed before).
    for k in ("1", "2", "3"):
        monkeypatch.setenv("TUNE_CI_REPEAT", k)
        monkeypatch.setenv("DEMO_NO_FAULTS", "1")
        rerun = demo_project.runpytest_subprocess("examples/demo")
        assert rerun.ret == 0, rerun.stdout.str()
        rerun.assert_outcomes(passed=4)
