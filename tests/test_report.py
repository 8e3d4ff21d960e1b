from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import rundir_factory as factory

from pytest_tune_ci import report
from pytest_tune_ci import rundir


# Import matplotlib (and numpy) in the outer session, at collection: a module
# first imported inside a pytester in-process run is dropped after it, and
# numpy cannot be loaded twice in one process.
with contextlib.suppress(ImportError):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


CONFIG = {
    "ci_slack": {"throughput_qps": 0.875, "latency_mean_s": 1.125, "wer": 1.25},
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return factory.make_run_dir(tmp_path, factory.demo_stages(), config=CONFIG)


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing a module whose sys.modules entry is None raises ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)


# -- helpers: read the run dir and the markdown independently ---------------


def load_runs(run_dir: Path, stage: str) -> list[dict[str, Any]]:
    plan = json.loads((run_dir / "plan.json").read_text())
    out = []
    for k in range(1, plan["repeats"] + 1):
        path = run_dir / stage / f"run{k}.json"
        out.append(json.loads(path.read_text()) if path.exists() else {})
    return out


def section(md: str, heading: str) -> str:
    """The text of the section whose heading starts with ``heading``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    return "\n".join(lines[start:end])


def table_lines(text: str) -> list[list[str]]:
    """The cells of every markdown table row, header rows included."""
    return [
        [c.strip() for c in line.strip().strip("|").split(" | ")]
        for line in text.splitlines()
        if line.startswith("| ")
    ]


def rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (the first one wins)."""
    out: dict[str, list[str]] = {}
    for cells in table_lines(text):
        out.setdefault(cells[0], cells[1:])
    return out


def shown(raw: float, scale: float, digits: int) -> str:
    return f"{raw * scale:.{digits}f}"


def floor_to(raw: float, scale: float, digits: int) -> float:
    # Independent of the decimal code: a tolerance absorbs the float product.
    q = 10**digits
    return math.floor(raw * scale * q + 1e-7) / (q * scale)


def ceil_to(raw: float, scale: float, digits: int) -> float:
    q = 10**digits
    return math.ceil(raw * scale * q - 1e-7) / (q * scale)


# -- report.md content ---------------------------------------------------


def test_stage_sections_match_the_run_files(run_dir: Path) -> None:
    result = report.write_report(run_dir)
    assert result.exit_code == 0
    assert result.path == run_dir / "report.md"
    md = (run_dir / "report.md").read_text()

    # accuracy: scale 100, 2 digits, lower bound, floored
    runs = load_runs(run_dir, "demo_accuracy")
    acc = [r["metrics"]["accuracy"] for r in runs]
    text = section(md, "## 1. DEMO Accuracy")
    table = rows(text)
    for k, r in enumerate(runs, 1):
        total, ok = r["sample_counts"]["total"], r["sample_counts"]["ok"]
        assert table[str(k)] == [str(total), str(ok), shown(acc[k - 1], 100, 2)]
    assert table["**Worst-of-5**"][-1] == f"**{shown(min(acc), 100, 2)}**"
    assert table["Median"] == [f"{statistics.median(acc) * 100:.3f}"]
    assert table["Mean"] == [f"{statistics.fmean(acc) * 100:.3f}"]
    assert table["Stdev"] == [f"{statistics.stdev(acc) * 100:.3f}"]
    cv = statistics.stdev(acc) / statistics.fmean(acc)
    assert table["CV"] == [f"{cv * 100:.1f}%"]
    assert table["Min"] == [shown(min(acc), 100, 2)]
    assert table["Max"] == [shown(max(acc), 100, 2)]
    proposed = floor_to(min(acc), 100, 2)
    assert proposed == 0.5612
    assert table["Proposed"] == ["56.12 (`0.5612`) (worst)"]
    assert table["Current"] == ["56.00 (`0.56`)"]
    delta = round((proposed - 0.56) / 0.56 * 100, 1)
    assert table["Direction"] == [f"tightens (+{delta:.1f}%)"]
    assert table["Current fails observed"] == ["0 of 5"]
    assert table["False alarm now: distribution-free"] == [f"{1 / 7 * 100:.1f}%"]
    assert table["False alarm proposed: distribution-free"] == [f"≤{1 / 6 * 100:.1f}%"]
    normal = statistics.NormalDist(statistics.fmean(acc), statistics.stdev(acc))
    assert table["False alarm proposed: normal fit"] == [
        f"{normal.cdf(proposed) * 100:.1f}%"
    ]
    assert "Context: 2× NVIDIA H20 · MAX_SAMPLES=50 · MAX_TOKENS=? · N=5 runs" in text

    # WER stage: an upper bound ceiled, a count that stays an int, ×1.25 slack
    runs = load_runs(run_dir, "demo_wer")
    wer = [r["metrics"]["wer_below_50_corpus"] for r in runs]
    n50 = [r["metrics"]["n_above_50"] for r in runs]
    table = rows(section(md, "## 2. DEMO Wer"))
    assert ceil_to(max(wer), 100, 2) == 0.0239
    assert table["Proposed"][0] == "2.39 (`0.0239`) (worst)"
    assert (
        table["Proposed"][1]
        == f"{math.ceil(max(n50))} (`{math.ceil(max(n50))}`) (worst)"
    )
    assert table["CI enforces"][0] == (
        f"×1.25: {shown(0.0231 * 1.25, 100, 2)} → {shown(0.0239 * 1.25, 100, 2)}"
    )
    fails = sum(1 for v in n50 if v > 1 * 1.25)
    assert table["Current fails observed"][1] == f"{fails} of 5"

    # speed: 3 digits, an outlier, high noise, a current value failing runs
    runs = load_runs(run_dir, "demo_speed")
    qps = [r["metrics"]["throughput_qps"] for r in runs]
    lat = [r["metrics"]["latency_mean_s"] for r in runs]
    text = section(md, "## 3. DEMO Speed")
    table = rows(text)
    assert table["**Worst-of-5**"][-2:] == [
        f"**{shown(min(qps), 1, 3)}**",
        f"**{shown(max(lat), 1, 3)}**",
    ]
    low, high = floor_to(min(qps), 1, 3), ceil_to(max(lat), 1, 3)
    assert table["Proposed"] == [
        f"{shown(low, 1, 3)} (`{low!r}`) (worst)",
        f"{shown(high, 1, 3)} (`{high!r}`) (worst)",
    ]
    assert "Context: 2× NVIDIA H20 · CONCURRENCY=16 · N=5 runs" in text
    assert "**High noise** in Throughput (req/s)" in text
    assert "**Outlier** in Throughput (req/s) (`throughput_qps`): run 5" in text
    assert "**Outlier** in Latency" not in text
    enforced = 1.318 * 0.875
    fails = sum(1 for v in qps if v < enforced)
    assert table["Current fails observed"][0] == f"{fails} of 5"
    assert table["False alarm now: distribution-free"][0] == (
        f"{(fails + 1) / 7 * 100:.1f}%"
    )


def test_summary_table_rows(run_dir: Path) -> None:
    report.write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    summary = table_lines(section(md, "## Summary"))
    assert summary[0] == [
        "Stage", "Threshold", "Current", "Proposed", "Direction",
        "False alarm now", "False alarm after",
    ]  # fmt: skip
    data = json.loads((run_dir / "report.json").read_text())
    expected = {}
    for stage in data["stages"]:
        stage_runs = load_runs(run_dir, stage["stage_key"])
        for m in stage["metrics"]:
            values = [r["metrics"][m["metric_key"]] for r in stage_runs]
            worst = min(values) if m["worst_op"] == "min" else max(values)
            round_fn = floor_to if m["worst_op"] == "min" else ceil_to
            new = round_fn(worst, m["scale"], m["digits"])
            old = m["current_raw"]
            if abs(new - old) < 1e-12:
                continue
            tighter = new > old if m["worst_op"] == "min" else new < old
            word = "tightens" if tighter else "loosens"
            delta = round((new - old) / abs(old) * 100, 1)
            expected[f"`{m['ref']}`"] = (
                f"`{stage['stage_key']}`",
                old,
                new,
                f"{word} ({delta:+.1f}%)",
            )
    assert len(expected) == 5
    by_ref = {cells[1]: [cells[0], *cells[2:]] for cells in summary[1:]}
    assert set(by_ref) == set(expected)
    for ref, (stage, old, new, direction) in expected.items():
        cells = by_ref[ref]
        assert cells[0] == stage
        assert float(cells[1]) == old
        assert float(cells[2]) == pytest.approx(new, abs=1e-12)
        assert cells[3] == direction
    # the rates: accuracy fails no run now; the proposal is worst-of-5
    acc = [r["metrics"]["accuracy"] for r in load_runs(run_dir, "demo_accuracy")]
    normal = statistics.NormalDist(statistics.fmean(acc), statistics.stdev(acc))
    assert by_ref["`DEMO_MIN_ACCURACY`"][4:] == [
        f"{1 / 7 * 100:.1f}% (normal {normal.cdf(0.56) * 100:.1f}%)",
        f"≤{1 / 6 * 100:.1f}% (normal {normal.cdf(0.5612) * 100:.1f}%)",
    ]
    # integer preserved in the written value
    assert by_ref["`DEMO_N_ABOVE_50_MAX`"][2] == "2"
    # header
    header = md.split("## Summary")[0]
    assert "- Model: `demo`" in header
    assert "- Runs per stage (N): 5" in header
    assert f"- Run dir: `{run_dir}`" in header
    assert "`0123456789abcdef0123456789abcdef01234567` on `calib`" in header


def test_report_json(run_dir: Path) -> None:
    report.write_report(run_dir)
    data = json.loads((run_dir / "report.json").read_text())
    assert data["schema"] == 1 and data["partial"] is False
    assert [s["stage_key"] for s in data["stages"]] == [
        "demo_accuracy",
        "demo_wer",
        "demo_speed",
    ]
    speed = data["stages"][2]
    qps = next(m for m in speed["metrics"] if m["metric_key"] == "throughput_qps")
    values = [r["metrics"]["throughput_qps"] for r in load_runs(run_dir, "demo_speed")]
    assert qps["per_run_raw"] == values
    assert qps["worst_raw"] == min(values)
    assert qps["write_value"] == qps["proposed"] == 0.61
    assert qps["threshold_id"] == "demo_speed.throughput_qps"
    assert qps["source"] == "_DEMO_P95['throughput_qps']"
    assert qps["source_kind"] == "nested"
    assert qps["location"]["outer_key"] == 16 and qps["location"]["line"] > 0
    assert qps["stats"]["median"] == statistics.median(values)
    assert qps["stats"]["stdev"] == pytest.approx(statistics.stdev(values))
    assert qps["false_alarm_current"]["enforced"] == pytest.approx(1.318 * 0.875)
    assert qps["false_alarm_new"]["empirical"] == pytest.approx(1 / 6)
    assert qps["flags"] == ["high_noise", "outlier:run5", "current_fails_observed"]
    assert qps["direction"] == "loosens" and qps["delta_pct"] == -53.7
    n50 = data["stages"][1]["metrics"][1]
    assert n50["write_value"] == 2 and isinstance(n50["write_value"], int)
    assert speed["gpus"] == {"model": "NVIDIA H20", "count": 2}
    assert speed["context"] == {"CONCURRENCY": 16}
    assert speed["reliability"]["attempts"] == 5


def test_policy_and_noise_from_config(tmp_path: Path) -> None:
    config = {
        "threshold_policy": {"speed": "slack:10", "default": "worst"},
        "noise_cv_max": {"accuracy": 0.001},
    }
    run_dir = factory.make_run_dir(tmp_path, factory.demo_stages(), config=config)
    data = report.build_report(run_dir)
    speed = {m.key: m for m in data.stages[2].metrics}
    qps = [r["metrics"]["throughput_qps"] for r in load_runs(run_dir, "demo_speed")]
    assert speed["throughput_qps"].policy == "slack:10"
    assert speed["throughput_qps"].proposed == floor_to(min(qps) * 0.9, 1, 3)
    acc = data.stages[0].metrics[0]
    assert acc.policy == "worst"
    assert "high_noise" in acc.flags  # CV 1.9% > 0.1%


def test_predict_policy(tmp_path: Path) -> None:
    run_dir = factory.make_run_dir(
        tmp_path,
        factory.demo_stages(),
        config={"threshold_policy": {"default": "predict:0.05"}},
    )
    data = report.build_report(run_dir)
    lat = data.stages[2].metrics[1]
    values = [r["metrics"]["latency_mean_s"] for r in load_runs(run_dir, "demo_speed")]
    bound = statistics.fmean(values) + 2.132 * statistics.stdev(values) * math.sqrt(
        1 + 1 / 5
    )
    assert lat.policy == "predict:0.05"
    assert lat.proposed == pytest.approx(ceil_to(bound, 1, 3), abs=1.5e-3)
    assert lat.proposed is not None and lat.proposed >= max(values)


# -- determinism ----------------------------------------------------------


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    names = ["report.md", "report.json"]
    names += [f"plots/{p.name}" for p in sorted((run_dir / "plots").glob("*.png"))]
    return {n: (run_dir / n).read_bytes() for n in names}


def test_rerender_gives_the_same_bytes(run_dir: Path) -> None:
    report.write_report(run_dir)
    first = _snapshot(run_dir)
    assert len(first) == 5
    report.write_report(run_dir)
    assert _snapshot(run_dir) == first
    for path in run_dir.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    report.write_report(run_dir)
    assert _snapshot(run_dir) == first


# -- incomplete runs --------------------------------------------------------


def test_refuses_an_incomplete_run(tmp_path: Path) -> None:
    run_dir = factory.make_run_dir(
        tmp_path,
        factory.demo_stages(),
        missing={("demo_speed", 3)},
        runs={("demo_wer", 2): {"status": "failed", "reason": "oom (3 attempts)"}},
    )
    result = report.write_report(run_dir)
    assert result.exit_code == 1
    assert result.path is None
    text = "\n".join(result.lines)
    assert "13 of 15 stage-runs complete" in text
    assert "demo_speed run3: missing file" in text
    assert "demo_wer run2: oom (3 attempts)" in text
    assert "--tune-report-partial" in text
    assert not (run_dir / "report.md").exists()
    assert not (run_dir / "report.json").exists()


def test_partial_banner(tmp_path: Path, no_plots: None) -> None:
    run_dir = factory.make_run_dir(
        tmp_path, factory.demo_stages(), missing={("demo_speed", 3)}
    )
    result = report.write_report(run_dir, partial=True)
    assert result.exit_code == 0
    lines = (run_dir / "report.md").read_text().splitlines()
    assert lines[0] == "# CI threshold calibration: demo"
    assert lines[1].startswith("> **PARTIAL**: 1 of 15 stage-runs")
    assert result.lines[0].startswith("PARTIAL report:")
    assert "never applied" in result.lines[1]
    data = json.loads((run_dir / "report.json").read_text())
    assert data["partial"] is True
    assert data["missing"] == [
        {"stage": "demo_speed", "run": 3, "reason": "missing file"}
    ]
    text = section("\n".join(lines), "## 3. DEMO Speed")
    assert "· N=5 runs (4 complete)" in text
    table = rows(text)
    assert table["3 (missing: missing file)"] == ["?", "?", "—", "—"]
    assert "**Worst-of-4**" in table
    speed = data["stages"][2]["metrics"][0]
    assert speed["stats"]["n"] == 4
    assert speed["per_run"][2] is None


def test_partial_with_a_stage_without_any_run(tmp_path: Path, no_plots: None) -> None:
    stages = factory.demo_stages()
    run_dir = factory.make_run_dir(
        tmp_path, stages, missing={("demo_accuracy", k) for k in range(1, 6)}
    )
    result = report.write_report(run_dir, partial=True)
    assert result.exit_code == 0
    data = json.loads((run_dir / "report.json").read_text())
    acc = data["stages"][0]["metrics"][0]
    assert acc["proposed"] is None and acc["direction"] == "unknown"
    md = (run_dir / "report.md").read_text()
    assert "`DEMO_MIN_ACCURACY`" not in section(md, "## Summary")


# -- applied changes, step summary, provenance ------------------------------


def test_applied_changes_section(run_dir: Path, no_plots: None) -> None:
    applied = {
        "changes": [
            {
                "stage_key": "demo_speed",
                "metric_key": "throughput_qps",
                "file": "tests/test_demo_ci.py",
                "symbol": "_DEMO_P95",
                "outer_key": 16,
                "inner_key": "throughput_qps",
                "source": "_DEMO_P95['throughput_qps']",
                "ref": "_DEMO_P95[16]['throughput_qps']",
                "old": 1.318,
                "new": 1.29,
                "direction": "loosens",
                "delta_pct": -2.1,
                "applied_at": "2026-12-04T09:00:00Z",
            },
            {
                "stage_key": "demo_accuracy",
                "metric_key": "accuracy",
                "ref": "DEMO_MIN_ACCURACY",
                "old": 0.56,
                "new": 0.5718,
            },
        ]
    }
    (run_dir / "applied.json").write_text(json.dumps(applied))
    report.write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[-2:] == ["## Applied changes", "## Provenance"]
    table = rows(section(md, "## Applied changes"))
    assert table["`demo_speed`"] == [
        "`_DEMO_P95[16]['throughput_qps']`",
        "1.318",
        "1.29",
        "loosens (-2.1%)",
    ]
    delta = round((0.5718 - 0.56) / 0.56 * 100, 1)
    assert table["`demo_accuracy`"][-1] == f"tightens (+{delta:.1f}%)"
    data = json.loads((run_dir / "report.json").read_text())
    assert data["applied"] == applied["changes"]


def test_step_summary_append(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_plots: None
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report.write_report(run_dir)
    text = summary.read_text()
    assert text.startswith("earlier step\n")
    table = report.summary_table_md(run_dir)
    assert table in text
    assert "| `demo_speed` | `_DEMO_P95[16]['throughput_qps']` |" in table
    assert table.splitlines()[0] == "### pytest-tune-ci: demo (N=5)"


def test_provenance(tmp_path: Path, no_plots: None) -> None:
    run_dir = factory.make_run_dir(tmp_path, factory.demo_stages(), dirty=True)
    report.write_report(run_dir)
    text = section((run_dir / "report.md").read_text(), "## Provenance")
    assert "- Dirty: yes, see [workspace.diff](workspace.diff)" in text
    assert "- GPU: NVIDIA H20 × 8, driver 550.54.15" in text
    assert "- Python 3.11.9, pytest 9.0.0, pytest-tune-ci 0.1.0" in text
    assert f"- Config sha256: `{'c' * 64}`" in text
    assert "- Started: 2026-12-03T21:00:00.000000Z" in text
    assert "- Finished: 2026-12-03T21:00:51.000000Z" in text


def test_missing_precheck_shows_question_marks(tmp_path: Path, no_plots: None) -> None:
    run_dir = factory.make_run_dir(tmp_path, factory.demo_stages(), precheck=None)
    report.write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "Context: 2× ? · CONCURRENCY=16 · N=5 runs" in md
    assert "- GPU: ? × ?, driver ?" in md


# -- reliability ----------------------------------------------------------


def test_reliability_retries_and_overlaps(tmp_path: Path, no_plots: None) -> None:
    stages = factory.demo_stages()
    other = factory.StageSpec(
        key="other_speed",
        group="speed",
        test="tests/test_other_ci.py",
        metrics=[
            factory.Metric(
                "throughput_qps",
                "_OTHER_P95",
                2.0,
                "min",
                "Throughput (req/s)",
                1,
                3,
                inner_key="throughput_qps",
                outer_key=8,
            )
        ],
        values={"throughput_qps": [2.1, 2.2, 2.15, 2.12, 2.18]},
    )
    stages.append(other)
    attempts = [
        {"outcome": "oom", "reason": "CUDA out of memory", "duration_s": 3.0},
        {"outcome": "crash", "reason": "server died", "duration_s": 2.0},
        {"outcome": "ok", "reason": "", "duration_s": 10.0},
    ]
    # demo_* (one pytest pass per repeat) run k at 100k s; other_speed run 2
    # overlaps demo run 2 on another worker.
    schedule = {(s.key, k): (100.0 * k, 20.0) for s in stages[:3] for k in range(1, 6)}
    schedule.update({("other_speed", k): (100.0 * k + 50, 20.0) for k in range(1, 6)})
    schedule[("other_speed", 2)] = (205.0, 30.0)
    run_dir = factory.make_run_dir(
        tmp_path,
        stages,
        workers=2,
        schedule=schedule,
        runs={
            ("demo_speed", 4): {"attempts": attempts, "duration_s": 15.0},
            ("other_speed", 2): {"worker": "gw1"},
        },
    )
    data = report.build_report(run_dir)
    speed = data.stages[2]
    assert speed.reliability.attempts == 7
    assert speed.reliability.retries == {"crash": 1, "oom": 1}
    assert speed.reliability.median_duration_s == 20.0
    assert speed.reliability.max_duration_s == 20.0
    overlaps = {(s.key, r.run): r.overlaps for s in data.stages for r in s.runs}
    assert overlaps[("other_speed", 2)] == [
        "demo_accuracy#2",
        "demo_wer#2",
        "demo_speed#2",
    ]
    assert overlaps[("demo_speed", 2)] == ["other_speed#2"]
    # stages of one test file and repeat share a pass: never an overlap
    assert all(
        not v
        for (key, k), v in overlaps.items()
        if (key, k) != ("other_speed", 2) and k != 2
    )
    report.write_report(run_dir)
    text = section((run_dir / "report.md").read_text(), "## Reliability")
    table = rows(text)
    assert table["`demo_speed`"] == ["5/5", "7", "crash 1, oom 1", "20.0", "20.0", "1"]
    assert "- `other_speed#2` (gw1) overlapped `demo_accuracy#2`" in text
    assert "Workers: 2." in text


# -- robustness -------------------------------------------------------------


def test_needs_config_and_unknown_current(tmp_path: Path, no_plots: None) -> None:
    stages = factory.demo_stages()
    stages[0].metrics.append(
        factory.Metric(
            "similarity_mean", "DEMO_SIMILARITY_MEAN_MIN", None, "min",
            "Speaker sim mean", 1, 4,
        )
    )  # fmt: skip
    stages[0].values["similarity_mean"] = [0.71, 0.7, 0.72, 0.69, 0.73]
    stages[1].metrics[0].json_path = None  # NEEDS_CONFIG
    stages[1].values["wer_below_50_corpus"] = [None] * 5
    run_dir = factory.make_run_dir(tmp_path, stages)
    result = report.write_report(run_dir)
    assert result.exit_code == 0
    md = (run_dir / "report.md").read_text()
    sim = rows(section(md, "## 1. DEMO Accuracy"))
    assert sim["Current"][1] == "?"
    assert sim["Direction"][1] == "unknown"
    assert sim["Proposed"][1] == "0.6900 (`0.69`) (worst)"
    wer = rows(section(md, "## 2. DEMO Wer"))
    assert wer["1"][2] == "N/A"
    assert "no json_path in stages.yaml" in md
    summary = rows(section(md, "## Summary"))
    assert summary["`demo_accuracy`"][0] in (
        "`DEMO_MIN_ACCURACY`",
        "`DEMO_SIMILARITY_MEAN_MIN`",
    )
    data = json.loads((run_dir / "report.json").read_text())
    wer_metric = data["stages"][1]["metrics"][0]
    assert wer_metric["flags"] == ["needs_config"]
    assert wer_metric["proposed"] is None


def test_without_config_or_stage_snapshot_entry(tmp_path: Path, no_plots: None) -> None:
    from pytest_tune_ci.stages import dump_stages
    from pytest_tune_ci.stages import load_stages

    run_dir = factory.make_run_dir(tmp_path, factory.demo_stages())
    (run_dir / "config.yaml").unlink()
    snapshot = run_dir / "stages.yaml"
    stages = load_stages(snapshot)
    del stages["demo_accuracy"]
    snapshot.write_text(dump_stages(stages))
    assert report.write_report(run_dir).exit_code == 0
    md = (run_dir / "report.md").read_text()
    assert "not in the stages.yaml snapshot" in section(md, "## 1. demo_accuracy")
    data = json.loads((run_dir / "report.json").read_text())
    n50 = data["stages"][1]["metrics"][1]
    assert n50["proposed"] == 2 and isinstance(n50["proposed"], int)
    assert n50["false_alarm_current"]["factor"] == 1.0


def test_not_a_run_dir(tmp_path: Path) -> None:
    with pytest.raises(rundir.RunError, match=r"no plan\.json"):
        report.write_report(tmp_path)


# -- plots ----------------------------------------------------------------


def test_one_png_per_stage(run_dir: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    report.write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    for key, title in [
        ("demo_accuracy", "DEMO Accuracy"),
        ("demo_wer", "DEMO Wer"),
        ("demo_speed", "DEMO Speed"),
    ]:
        png = run_dir / "plots" / f"{key}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        pixels = image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert f"![{title}: per-run values](plots/{key}.png)" in md
    assert "pip install" not in md


def test_without_matplotlib_the_report_says_how(run_dir: Path, no_plots: None) -> None:
    result = report.write_report(run_dir)
    assert result.exit_code == 0
    md = (run_dir / "report.md").read_text()
    assert "`pip install pytest-tune-ci[plot]`" in section(md, "## Plots")
    assert "![" not in md
    assert not (run_dir / "plots").exists()
    for heading in (
        "## Summary",
        "## 3. DEMO Speed",
        "## Reliability",
        "## Provenance",
    ):
        assert heading in md
