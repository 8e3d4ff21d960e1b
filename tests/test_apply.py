"""``--tune-apply-plan`` and ``--tune-apply``: review and write thresholds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from rundir_factory import Metric
from rundir_factory import StageSpec
from rundir_factory import make_run_dir

from pytest_tune_ci import apply
from pytest_tune_ci import literals
from pytest_tune_ci import logic
from pytest_tune_ci import plot
from pytest_tune_ci import rundir
from pytest_tune_ci.errors import ConfigError
from pytest_tune_ci.errors import RunError
from pytest_tune_ci.errors import TuneError
from pytest_tune_ci.report import write_report
from pytest_tune_ci.stages import Location
from pytest_tune_ci.stages import Uncalibrated
from pytest_tune_ci.stages import dump_stages
from pytest_tune_ci.stages import load_stages


TEST = "tests/test_mmmu_ci.py"

# The file as a person wrote it: comments, odd spacing, both quote styles, a
# trailing comma, an annotation, another concurrency level, CRLF endings.
SOURCE = "\r\n".join(
    [
        '"""MMMU CI test (synthetic): ünïcode in the docstring."""',
        "import os",
        "",
        "CONCURRENCY = 16",
        "MMMU_MIN_ACCURACY = 0.56  # floor, see #123",
        "N_ABOVE_50_MAX: int = 4",
        "_MMMU_P95 = {",
        '    8: {"throughput_qps": 0.9, "latency_mean_s": 12.0},  # tp2',
        "    16: {",
        "        'throughput_qps' : 1.318,",
        '        "latency_mean_s": 10.32,   # é measured in May',
        "    },",
        "}",
        "",
        "",
        "def test_mmmu():",
        "    assert os.sep and MMMU_MIN_ACCURACY < 1",
        "",
    ]
)


def specs() -> list[StageSpec]:
    return [
        StageSpec(
            key="mmmu_accuracy",
            group="accuracy",
            test=TEST,
            metrics=[
                Metric("accuracy", "MMMU_MIN_ACCURACY", 0.56, "min", "Acc (%)", 100, 2)
            ],
            values={"accuracy": [0.58, 0.56127, 0.57]},  # proposes 0.5612: tightens
        ),
        StageSpec(
            key="mmmu_wer",
            group="wer",
            test=TEST,
            metrics=[
                Metric(
                    "n_above_50", "N_ABOVE_50_MAX", 4, "max", "n>50", 1, 0, integer=True
                )
            ],
            values={"n_above_50": [3.0, 5.0, 4.0]},  # proposes 5: loosens
        ),
        StageSpec(
            key="mmmu_speed",
            group="speed",
            test=TEST,
            concurrency=16,
            metrics=[
                Metric(
                    "throughput_qps",
                    "_MMMU_P95",
                    1.318,
                    "min",
                    "qps",
                    1,
                    3,
                    inner_key="throughput_qps",
                    outer_key=16,
                ),
                Metric(
                    "latency_mean_s",
                    "_MMMU_P95",
                    10.32,
                    "max",
                    "lat",
                    1,
                    3,
                    inner_key="latency_mean_s",
                    outer_key=16,
                ),
            ],
            # 1.35 tightens (applied by smart mode), 10.9 loosens (asked).
            values={
                "throughput_qps": [1.35, 1.4, 1.38],
                "latency_mean_s": [10.5, 10.9, 10.7],
            },
        ),
    ]


EXPECTED_FULL = (
    SOURCE.replace("= 0.56  #", "= 0.5612  #")
    .replace("int = 4", "int = 5")
    .replace(": 1.318,", ": 1.35,")
    .replace(": 10.32,", ": 10.9,")
)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    # Plots cost seconds and are the report's business, not apply's.
    monkeypatch.setattr(plot, "available", lambda: False)


def _all_locations(run_dir: Path, name: str) -> list[Location]:
    stages = load_stages(run_dir / rundir.STAGES_SNAPSHOT)
    locs = [m.location for s in stages.values() for m in s.metrics.values()]
    locs += [u.location for s in stages.values() for u in s.not_calibrated]
    return [lc for lc in locs if lc.file == name]


def finish_run(root: Path, run_dir: Path, sources: dict[str, bytes]) -> Path:
    """Replace the factory's files, add not-calibrated entries, hash, report."""
    for name, data in sources.items():
        (root / name).write_bytes(data)
    path = run_dir / rundir.STAGES_SNAPSHOT
    stages = load_stages(path)
    for stage in stages.values():
        if stage.key == "mmmu_speed":
            stage.not_calibrated = [
                Uncalibrated(Location(TEST, "_MMMU_P95", 8, key), "other concurrency")
                for key in ("throughput_qps", "latency_mean_s")
            ]
    path.write_text(dump_stages(stages), encoding="utf-8")
    plan = rundir.read_plan(run_dir)
    plan.logic_hashes = {
        name: logic.logic_hash(
            (root / name).read_text(encoding="utf-8"), _all_locations(run_dir, name)
        )
        for name in plan.logic_hashes
    }
    rundir.write_plan(run_dir, plan)
    assert write_report(run_dir).exit_code == 0
    return run_dir


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\n")
    return pytester


@pytest.fixture
def run_dir(project: pytest.Pytester) -> Path:
    root = project.path
    out = make_run_dir(root, specs())
    return finish_run(root, out, {TEST: SOURCE.encode("utf-8")})


def output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def read_test(project: pytest.Pytester) -> bytes:
    return (project.path / TEST).read_bytes()


# -- the plan -----------------------------------------------------------------


def test_apply_plan_prints_the_plan_as_json(
    project: pytest.Pytester, run_dir: Path
) -> None:
    result = project.runpytest("--tune-apply-plan", str(run_dir))
    assert result.ret == 0
    plan = json.loads(result.stdout.str())
    assert (plan["model"], plan["repeats"], plan["run_dir"]) == (
        "demo",
        3,
        str(run_dir),
    )
    metrics = {m["threshold_id"]: m for s in plan["stages"] for m in s["metrics"]}
    qps = metrics["mmmu_speed.throughput_qps"]
    assert {k: qps[k] for k in ("source", "source_kind", "symbol", "subkey")} == {
        "source": "_MMMU_P95['throughput_qps']",
        "source_kind": "nested",
        "symbol": "_MMMU_P95",
        "subkey": "throughput_qps",
    }
    assert (qps["concurrency"], qps["file"], qps["line"]) == (16, TEST, 10)
    assert (qps["current_raw"], qps["write_value"], qps["direction"]) == (
        1.318,
        1.35,
        "tightens",
    )
    assert qps["per_run_raw"] == [1.35, 1.4, 1.38]
    assert (qps["worst_op"], qps["worst_raw"], qps["policy"]) == ("min", 1.35, "worst")
    assert set(qps["false_alarm_current"]) >= {"empirical"}
    assert "empirical" in qps["false_alarm_new"]
    acc = metrics["mmmu_accuracy.accuracy"]
    assert (acc["source_kind"], acc["subkey"], acc["concurrency"]) == (
        "bare",
        None,
        None,
    )
    assert (acc["current_raw"], acc["write_value"], acc["line"]) == (0.56, 0.5612, 5)
    n50 = metrics["mmmu_wer.n_above_50"]
    assert (n50["current_raw"], n50["write_value"], n50["direction"]) == (
        4,
        5,
        "loosens",
    )
    assert metrics["mmmu_speed.latency_mean_s"]["direction"] == "loosens"
    speed = next(s for s in plan["stages"] if s["stage_key"] == "mmmu_speed")
    assert (speed["test"], speed["stage_group"]) == (TEST, "speed")


# -- modes --------------------------------------------------------------------


def test_full_applies_everything_exactly_and_twice_is_a_no_op(
    project: pytest.Pytester, run_dir: Path
) -> None:
    result = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-mode", "full"
    )
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(
        [
            f"{TEST}:MMMU_MIN_ACCURACY = 0.5612",
            f"{TEST}:N_ABOVE_50_MAX = 5",
            f"{TEST}:_MMMU_P95[16]['throughput_qps'] = 1.35",
            f"{TEST}:_MMMU_P95[16]['latency_mean_s'] = 10.9",
            "applied 4 change(s) in 1 file(s)",
        ]
    )
    assert read_test(project) == EXPECTED_FULL.encode("utf-8")

    applied = json.loads((run_dir / rundir.APPLIED).read_text())["changes"]
    by_id = {f"{c['stage_key']}.{c['metric_key']}": c for c in applied}
    assert set(by_id) == {
        "mmmu_accuracy.accuracy",
        "mmmu_wer.n_above_50",
        "mmmu_speed.throughput_qps",
        "mmmu_speed.latency_mean_s",
    }
    qps = by_id["mmmu_speed.throughput_qps"]
    assert {k: qps[k] for k in ("file", "symbol", "outer_key", "inner_key")} == {
        "file": TEST,
        "symbol": "_MMMU_P95",
        "outer_key": 16,
        "inner_key": "throughput_qps",
    }
    assert (qps["source"], qps["ref"]) == (
        "_MMMU_P95['throughput_qps']",
        "_MMMU_P95[16]['throughput_qps']",
    )
    assert (qps["old"], qps["new"], qps["direction"], qps["delta_pct"]) == (
        1.318,
        1.35,
        "tightens",
        2.4,
    )
    assert qps["applied_at"].endswith("Z")
    assert by_id["mmmu_wer.n_above_50"]["new"] == 5

    # The report was re-rendered with the changes, before its provenance.
    md = (run_dir / rundir.REPORT_MD).read_text()
    assert md.index("## Applied changes") < md.index("## Provenance")
    assert "`_MMMU_P95[16]['throughput_qps']`" in md
    report = json.loads((run_dir / rundir.REPORT_JSON).read_text())
    assert len(report["applied"]) == 4

    # The logic hash is the run's: discovery would agree nothing changed.
    plan = rundir.read_plan(run_dir)
    assert (
        logic.logic_hash(EXPECTED_FULL, _all_locations(run_dir, TEST))
        == plan.logic_hashes[TEST]
    )

    # The same plan again: every direction is equal and nothing moves.
    again = project.runpytest("--tune-apply-plan", str(run_dir))
    directions = {
        m["direction"]
        for s in json.loads(again.stdout.str())["stages"]
        for m in s["metrics"]
    }
    assert directions == {"equal"}
    second = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-mode", "full"
    )
    assert second.ret == 0
    second.stdout.fnmatch_lines(["nothing to write*"])
    assert read_test(project) == EXPECTED_FULL.encode("utf-8")
    assert len(json.loads((run_dir / rundir.APPLIED).read_text())["changes"]) == 4


def test_report_mode_writes_only_the_patch(
    project: pytest.Pytester, run_dir: Path
) -> None:
    result = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-mode", "report"
    )
    assert result.ret == 0, output(result)
    assert read_test(project) == SOURCE.encode("utf-8")
    assert not (run_dir / rundir.APPLIED).exists()
    patch = (run_dir / apply.PATCH).read_bytes()
    assert patch.startswith(f"--- a/{TEST}\n+++ b/{TEST}\n".encode())
    assert b"-MMMU_MIN_ACCURACY = 0.56  # floor, see #123\r\n" in patch
    assert b"+MMMU_MIN_ACCURACY = 0.5612  # floor, see #123\r\n" in patch
    assert b"+        'throughput_qps' : 1.35,\r\n" in patch
    result.stdout.fnmatch_lines(
        [
            f"--- a/{TEST}",
            "+N_ABOVE_50_MAX: int = 5",
            "report mode: 4 change(s) in 1 file(s), nothing written*",
        ]
    )
    # The patch is what full mode writes.
    project.runpytest("--tune-apply", str(run_dir), "--tune-apply-mode", "full")
    assert read_test(project) == EXPECTED_FULL.encode("utf-8")


def test_smart_without_terminal_applies_speed_tightenings_only(
    project: pytest.Pytester, run_dir: Path
) -> None:
    result = project.runpytest("--tune-apply", str(run_dir))  # smart is the default
    assert result.ret == 0, output(result)
    assert read_test(project) == SOURCE.replace(": 1.318,", ": 1.35,").encode()
    result.stdout.fnmatch_lines(
        [
            f"{TEST}:_MMMU_P95[16]['throughput_qps'] = 1.35",
            "3 threshold(s) need a decision and were kept; add to a YAML file*",
            "  mmmu_accuracy.accuracy: apply    # 0.56 -> 0.5612, tightens +0.2%",
            "  mmmu_wer.n_above_50: apply    # 4 -> 5, loosens +25.0%",
            "  mmmu_speed.latency_mean_s: apply    # 10.32 -> 10.9, loosens +5.6%",
        ]
    )


def test_smart_with_an_answers_file(project: pytest.Pytester, run_dir: Path) -> None:
    answers = project.path / "answers.yaml"
    answers.write_text(
        "mmmu_accuracy.accuracy: apply\n"
        "mmmu_speed.latency_mean_s: 11.5\n"
        "mmmu_speed.throughput_qps: keep  # overrides the automatic tightening\n"
    )
    result = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-answers", str(answers)
    )
    assert result.ret == 0, output(result)
    expected = SOURCE.replace("= 0.56  #", "= 0.5612  #").replace(": 10.32,", ": 11.5,")
    assert read_test(project) == expected.encode()
    result.stdout.fnmatch_lines(
        [
            f"{TEST}:MMMU_MIN_ACCURACY = 0.5612",
            f"{TEST}:_MMMU_P95[16]['latency_mean_s'] = 11.5",
            f"1 threshold(s) need a decision and were kept; add to {answers}*",
            "  mmmu_wer.n_above_50: apply*",
        ]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("mmmu_accuracy.acuracy: apply\n", "mmmu_accuracy.acuracy: unknown threshold id"
         " (did you mean 'mmmu_accuracy.accuracy'?)"),
        ("mmmu_accuracy.accuracy: maybe\n", "mmmu_accuracy.accuracy: expected keep, "
         "apply or a number, got 'maybe'"),
        ("mmmu_accuracy.accuracy: .nan\n", "mmmu_accuracy.accuracy: expected keep, "
         "apply or a number, got nan"),
        ("- mmmu_accuracy.accuracy\n", "expected a mapping of threshold id*"),
        ("a: [\n", "*line 2: invalid YAML*"),
    ],
)  # fmt: skip
def test_bad_answers_file_is_a_usage_error(
    project: pytest.Pytester, run_dir: Path, content: str, message: str
) -> None:
    answers = project.path / "answers.yaml"
    answers.write_text(content)
    result = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-answers", str(answers)
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {answers}: {message}"])
    assert read_test(project) == SOURCE.encode()


# -- interactive review (unit: a fake terminal) ---------------------------------


def _fake(replies: list[str]) -> tuple[Callable[[str], str], list[str]]:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        if not replies:
            raise EOFError
        return replies.pop(0)

    return ask, prompts


def test_interactive_review(project: pytest.Pytester, run_dir: Path) -> None:
    lines: list[str] = []
    # accuracy: apply; n_above_50: junk, then keep; latency: a value tighter
    # than the worst run (refused at the second question), then 11.
    ask, prompts = _fake(["a", "bogus", "k", "10.4", "n", "11"])
    rc = apply.run_apply(
        run_dir,
        project.path,
        mode="smart",
        answers=None,
        interactive=True,
        out=lines.append,
        ask=ask,
    )
    assert rc == 0
    expected = (
        SOURCE.replace("= 0.56  #", "= 0.5612  #")
        .replace(": 1.318,", ": 1.35,")
        .replace(": 10.32,", ": 11.0,")
    )
    assert read_test(project) == expected.encode()
    text = "\n".join(lines)
    assert "mmmu_accuracy.accuracy (Acc (%); accuracy, worst op min)" in text
    assert "  per-run values: 0.58, 0.56127, 0.57 (worst 0.56127)" in text
    assert "  current:  0.56" in text
    assert "  proposed: 0.5612 (tightens, Δ +0.2%)" in text
    assert "  false alarms now: empirical" in text
    assert "not understood: 'bogus'" in text
    assert any("10.4 is tighter than the worst observation 10.9" in p for p in prompts)
    assert "need a decision" not in text


def test_interactive_end_of_input_keeps_the_rest(
    project: pytest.Pytester, run_dir: Path
) -> None:
    lines: list[str] = []
    ask, prompts = _fake(["apply"])  # then EOF
    rc = apply.run_apply(
        run_dir,
        project.path,
        mode="smart",
        answers=None,
        interactive=True,
        out=lines.append,
        ask=ask,
    )
    assert rc == 0
    assert len(prompts) == 2  # no question after input ended
    assert any(line.startswith("2 threshold(s) need a decision") for line in lines)
    assert "  mmmu_speed.latency_mean_s: apply" in "\n".join(lines)


def test_unknown_mode_is_a_usage_error(project: pytest.Pytester, run_dir: Path) -> None:
    with pytest.raises(TuneError, match="--tune-apply-mode: expected one of") as info:
        apply.run_apply(
            run_dir,
            project.path,
            mode="yolo",
            answers=None,
            interactive=False,
            out=print,
        )
    assert not isinstance(info.value, RunError)


def test_fixed_threshold_cannot_be_answered(
    project: pytest.Pytester, run_dir: Path
) -> None:
    report = json.loads((run_dir / rundir.REPORT_JSON).read_text())
    report["stages"][0]["metrics"][0]["direction"] = "fixed"
    (run_dir / rundir.REPORT_JSON).write_text(json.dumps(report))
    plan = apply.make_plan(run_dir, project.path)
    (project.path / "a.yaml").write_text("mmmu_accuracy.accuracy: 0.6\n")
    with pytest.raises(ConfigError, match="a fixed threshold is never rewritten"):
        apply.read_answers(project.path / "a.yaml", plan)
    rc = apply.run_apply(
        run_dir, project.path, mode="full", answers=None, interactive=False, out=print
    )
    assert rc == 0
    assert b"MMMU_MIN_ACCURACY = 0.56  #" in read_test(project)


# -- refusals -----------------------------------------------------------------


def _refused(project: pytest.Pytester, run_dir: Path, *patterns: str) -> None:
    for flag in ("--tune-apply-plan", "--tune-apply"):
        result = project.runpytest(flag, str(run_dir), "--tune-apply-mode", "full")
        assert result.ret != 0
        result.stderr.fnmatch_lines(list(patterns))
    assert read_test(project) == SOURCE.encode()


def test_refuses_an_incomplete_run(project: pytest.Pytester, run_dir: Path) -> None:
    rundir.stage_run_path(run_dir, "mmmu_wer", 2).unlink()
    _refused(
        project,
        run_dir,
        "ERROR: *: the run is incomplete (8/9 stage-runs complete; missing "
        "mmmu_wer#2 (missing file)); finish it with pytest --tune-resume *",
    )


def test_refuses_a_run_without_report(project: pytest.Pytester, run_dir: Path) -> None:
    (run_dir / rundir.REPORT_JSON).unlink()
    _refused(project, run_dir, "ERROR: *report.json: no report yet; write it with*")


def test_refuses_a_partial_report(project: pytest.Pytester, run_dir: Path) -> None:
    report = json.loads((run_dir / rundir.REPORT_JSON).read_text())
    report["partial"] = True
    (run_dir / rundir.REPORT_JSON).write_text(json.dumps(report))
    _refused(project, run_dir, "ERROR: *report.json: the report is PARTIAL*")


def test_refuses_when_the_test_logic_changed(
    project: pytest.Pytester, run_dir: Path
) -> None:
    changed = SOURCE.replace("MMMU_MIN_ACCURACY < 1", "MMMU_MIN_ACCURACY < 0.99")
    (project.path / TEST).write_bytes(changed.encode())
    result = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-mode", "full"
    )
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        [
            "ERROR: cannot apply:",
            f"  tests changed since calibration (logic hash differs): {TEST}; *",
        ]
    )
    assert read_test(project) == changed.encode()


def test_the_other_concurrency_level_is_part_of_the_logic(
    project: pytest.Pytester, run_dir: Path
) -> None:
    # Its values are recognised thresholds (not_calibrated), so editing them is
    # not a logic change; adding a key to that dict is.
    ok = SOURCE.replace('"throughput_qps": 0.9', '"throughput_qps": 0.95')
    (project.path / TEST).write_bytes(ok.encode())
    assert apply.make_plan(run_dir, project.path).stages
    bad = SOURCE.replace('"latency_mean_s": 12.0}', '"latency_mean_s": 12.0, "x": 1}')
    (project.path / TEST).write_bytes(bad.encode())
    with pytest.raises(RunError, match="logic hash differs"):
        apply.make_plan(run_dir, project.path)


def test_refuses_a_threshold_the_file_no_longer_has(
    project: pytest.Pytester, run_dir: Path
) -> None:
    gone = SOURCE.replace("N_ABOVE_50_MAX: int = 4", "N_ABOVE_50: int = 4")
    (project.path / TEST).write_bytes(gone.encode())
    result = project.runpytest(
        "--tune-apply", str(run_dir), "--tune-apply-mode", "full"
    )
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        [
            "ERROR: cannot apply:",
            f"  {TEST}: N_ABOVE_50_MAX (mmmu_wer.n_above_50): the file no longer "
            "has this threshold",
        ]
    )
    assert read_test(project) == gone.encode()


# -- threshold files ----------------------------------------------------------


def test_threshold_file_is_edited_instead_of_the_test(
    project: pytest.Pytester,
) -> None:
    spec = StageSpec(
        key="tts_speed",
        group="speed",
        test="tests/test_tts_ci.py",
        threshold_file="tests/tts_ci_config.py",
        metrics=[
            Metric(
                "rtf_mean",
                "_VC_P95",
                0.8149,
                "max",
                "RTF",
                1,
                4,
                inner_key="rtf_mean",
                outer_key=16,
            )
        ],
        values={"rtf_mean": [0.61, 0.6349, 0.62]},
    )
    root = project.path
    out = make_run_dir(root, [spec])
    test_before = (root / "tests/test_tts_ci.py").read_bytes()
    finish_run(root, out, {})
    result = project.runpytest("--tune-apply", str(out))
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(
        ["tests/tts_ci_config.py:_VC_P95[16]['rtf_mean'] = 0.6349"]
    )
    assert literals.read_values(
        (root / "tests/tts_ci_config.py").read_text(),
        [Location("tests/tts_ci_config.py", "_VC_P95", 16, "rtf_mean")],
    ) == {Location("tests/tts_ci_config.py", "_VC_P95", 16, "rtf_mean"): 0.6349}
    assert (root / "tests/test_tts_ci.py").read_bytes() == test_before


def test_a_file_that_fails_to_verify_is_restored(
    project: pytest.Pytester, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = apply.rewrite.verify

    def failing(data: bytes, edits: object, **kw: object) -> list[str]:
        if "original" not in kw:  # the read-back after the write
            return ["tests/test_mmmu_ci.py: reads back something else"]
        return real(data, edits, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(apply.rewrite, "verify", failing)
    lines: list[str] = []
    rc = apply.run_apply(
        run_dir, project.path, mode="full", answers=None, interactive=False,
        out=lines.append,
    )  # fmt: skip
    assert rc == 1
    assert read_test(project) == SOURCE.encode()
    assert f"not applied (left as they were): {TEST}" in lines
    assert not (run_dir / rundir.APPLIED).exists()
