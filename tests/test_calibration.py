"""The calibration loop as a user runs it: repeats, isolation, outcomes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_model


CONFIG = """
name: m
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
watch_logs: ["server*/server.log"]
attempt_timeout_s: 60
metric_sources:
  test_fix_ci.py:
    json_file: "test_one0/res.json"
    paths: {accuracy: "summary.accuracy"}
"""

FIXTURE_SUITE = {
    "suite/conftest.py": """
        import os
        import pytest

        LOG = os.path.join(os.path.dirname(__file__), "..", "events.log")

        def event(text):
            with open(LOG, "a") as fh:
                fh.write(text + "\\n")

        @pytest.fixture(scope="session")
        def session_thing():
            event("session start")
            yield
            event("session stop")
    """,
    "suite/test_fix_ci.py": """
        import json
        import pytest
        from conftest import event

        FIX_MIN_ACCURACY = 0.5

        class TestGroup:
            @pytest.fixture(scope="class")
            def klass(self):
                event("class start")
                yield
                event("class stop")

            def test_in_class(self, klass, session_thing):
                pass

        @pytest.fixture(scope="module")
        def server(session_thing):
            event("module start")
            yield
            event("module stop")

        def test_one(server, tmp_path, tmp_path_factory):
            assert tmp_path.name == "test_one0"
            extra = tmp_path_factory.mktemp("extra")
            assert extra.name == "extra0"
            (tmp_path / "res.json").write_text(
                json.dumps({"summary": {"accuracy": 0.7}})
            )

        def test_two(server, tmp_path):
            assert tmp_path.name == "test_two0"
    """,
}


def run_dir_of(pytester: pytest.Pytester) -> Path:
    runs = sorted((pytester.path / ".tune-runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def read_run(run_dir: Path, stage: str, k: int) -> dict[str, object]:
    data = json.loads((run_dir / stage / f"run{k}.json").read_text())
    assert isinstance(data, dict)
    return data


def test_every_fixture_scope_starts_again_in_each_repeat(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, FIXTURE_SUITE)
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "3")
    assert result.ret == 0, result.stdout.str()
    events = (pytester.path / "events.log").read_text().split("\n")[:-1]
    for scope in ("session", "module", "class"):
        assert events.count(f"{scope} start") == 3
        assert events.count(f"{scope} stop") == 3
    # Each repeat's teardown has run before the next repeat starts.
    depth = 0
    for line in events:
        depth += 1 if line.endswith("start") else -1
        assert 0 <= depth <= 3
    assert depth == 0
    run_dir = run_dir_of(pytester)
    for k in (1, 2, 3):
        record = read_run(run_dir, "fix_accuracy", k)
        assert record["status"] == "ok"
        assert record["metrics"] == {"accuracy": 0.7}
        assert record["tests"] == {"passed": 3}
    result.stdout.fnmatch_lines(["*fix_accuracy run 3/3 ok accuracy=0.7 (1 attempt)*"])


def test_basetemp_layout_matches_a_plain_basetemp_run(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, FIXTURE_SUITE)
    plain = pytester.path / "plain"
    result = pytester.runpytest("suite/test_fix_ci.py", f"--basetemp={plain}")
    assert result.ret == 0
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "2")
    assert result.ret == 0, result.stdout.str()
    run_dir = run_dir_of(pytester)

    def listing(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))

    for k in (1, 2):
        basetemp = run_dir / "_pytest" / "test_fix_ci" / f"basetemp_run{k}"
        assert listing(basetemp) == listing(plain)
        record = read_run(run_dir, "fix_accuracy", k)
        assert record["basetemp"] == str(basetemp)
        assert Path(str(record["log"])).read_text().count("test_one call passed") == 1


def test_threshold_failure_is_an_observation_not_retried(
    pytester: pytest.Pytester,
) -> None:
    write_model(
        pytester,
        "m",
        CONFIG,
        {
            "suite/test_fix_ci.py": """
                import json
                FIX_MIN_ACCURACY = 0.9

                def test_one(tmp_path):
                    (tmp_path / "res.json").write_text(
                        json.dumps({"summary": {"accuracy": 0.7}}))
                    assert 0.7 >= FIX_MIN_ACCURACY
            """
        },
    )
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "2")
    # The calibration is complete, whatever the tests' own asserts said.
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*2 failed*"])
    record = read_run(run_dir_of(pytester), "fix_accuracy", 2)
    assert record["status"] == "ok"
    assert record["outcome"] == "threshold"
    assert len(record["attempts"]) == 1  # type: ignore[arg-type]


INFRA = {
    "oom": 'raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")',
    "killed": "raise RuntimeError(\"Command 'srv' died with <Signals.SIGKILL: 9>.\")",
    "segfault": 'raise RuntimeError("server exited: Segmentation fault (core dumped)")',
    "crash": 'print("Fatal Python error: Aborted", flush=True); time.sleep(30)',
    "timeout": "time.sleep(30)",
}


@pytest.mark.parametrize("outcome", sorted(INFRA))
def test_infrastructure_failures_are_retried_and_recorded(
    pytester: pytest.Pytester, outcome: str
) -> None:
    config = CONFIG.replace("attempt_timeout_s: 60", "attempt_timeout_s: 3")
    write_model(
        pytester,
        "m",
        config,
        {
            "suite/test_fix_ci.py": f"""
                import json, os, time
                FIX_MIN_ACCURACY = 0.5

                def test_one(tmp_path):
                    if os.environ["TUNE_CI_ATTEMPT"] == "1":
                        {INFRA[outcome]}
                    (tmp_path / "res.json").write_text(
                        json.dumps({{"summary": {{"accuracy": 0.7}}}}))
            """
        },
    )
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "1")
    assert result.ret == 0, result.stdout.str()
    record = read_run(run_dir_of(pytester), "fix_accuracy", 1)
    attempts = record["attempts"]
    assert isinstance(attempts, list)
    assert [a["outcome"] for a in attempts] == [outcome, "ok"]
    assert record["status"] == "ok"
    # Cut short long before the 30 s hang would have ended by itself.
    assert attempts[0]["duration_s"] < 20
    result.stdout.fnmatch_lines([f"*attempt 1: {outcome}*retrying*"])


def test_crash_in_watched_log_ends_the_hang_and_leaves_no_process(
    pytester: pytest.Pytester,
) -> None:
    write_model(
        pytester,
        "m",
        CONFIG,
        {
            "suite/test_fix_ci.py": """
                import json, os, subprocess, sys, time
                import pytest
                FIX_MIN_ACCURACY = 0.5

                @pytest.fixture(scope="module")
                def server(tmp_path_factory):
                    log = tmp_path_factory.mktemp("server") / "server.log"
                    proc = subprocess.Popen(
                        [sys.executable, "-c", "import time; time.sleep(300)"],
                        start_new_session=True,  # as servers often do
                    )
                    with open(os.environ["PIDS"], "a") as fh:
                        fh.write(f"{proc.pid}\\n")
                    log.write_text("health: Connection refused\\n")
                    yield log
                    # No teardown: a careless suite leaves its server behind.

                def test_one(server, tmp_path):
                    if os.environ["TUNE_CI_ATTEMPT"] == "1":
                        with open(server, "a") as fh:
                            fh.write("Router failed to start: worker 0 exited\\n")
                        time.sleep(120)
                    (tmp_path / "res.json").write_text(
                        json.dumps({"summary": {"accuracy": 0.7}}))
            """
        },
    )
    pids = pytester.path / "pids.txt"
    foreign = __import__("subprocess").Popen(
        [__import__("sys").executable, "-c", "import time; time.sleep(300)"]
    )
    try:
        os.environ["PIDS"] = str(pids)
        result = pytester.runpytest_subprocess(
            "--tune-model", "m", "--tune-repeats", "1"
        )
    finally:
        del os.environ["PIDS"]
    try:
        assert result.ret == 0, result.stdout.str()
        record = read_run(run_dir_of(pytester), "fix_accuracy", 1)
        first = record["attempts"][0]  # type: ignore[index]
        assert first["outcome"] == "crash"
        assert "Router failed to start" in first["reason"]
        assert first["duration_s"] < 30  # the hang would have lasted 120 s
        started = [int(x) for x in pids.read_text().split()]
        assert len(started) == 2
        for pid in started:
            assert not _alive(pid), f"server {pid} of the calibration still runs"
        assert foreign.poll() is None  # a process we did not start is untouched
    finally:
        foreign.kill()
        foreign.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_passed_tests_with_unreadable_results_stop_the_run(
    pytester: pytest.Pytester,
) -> None:
    write_model(
        pytester,
        "m",
        CONFIG,
        {
            "suite/test_fix_ci.py": """
                import json
                FIX_MIN_ACCURACY = 0.5

                def test_one(tmp_path):
                    (tmp_path / "res.json").write_text(
                        json.dumps({"summary": {"acc": 0.7}}))
            """
        },
    )
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "3")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*STOPPED*suite/test_fix_ci.py passed but their results could not be*"
            "metric_sources.test_fix_ci.py*key 'summary.accuracy' missing*",
        ]
    )
    run_dir = run_dir_of(pytester)
    assert not (run_dir / "fix_accuracy" / "run2.json").exists()  # no more GPU hours


def test_stale_stages_are_refused(pytester: pytest.Pytester) -> None:
    write_model(pytester, "m", CONFIG, FIXTURE_SUITE)
    assert pytester.runpytest("--tune-model", "m", "--tune-discover").ret == 0
    test = pytester.path / "suite" / "test_fix_ci.py"
    # A threshold change keeps stages.yaml valid ...
    test.write_text(test.read_text().replace("= 0.5", "= 0.55"))
    assert pytester.runpytest("--tune-model", "m", "--tune-repeats", "1").ret == 0
    # ... a change of logic does not.
    test.write_text(test.read_text().replace("def test_two", "def test_three"))
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "1")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*stages.yaml is stale*suite/test_fix_ci.py*"])


def test_discovery_runs_first_when_stages_yaml_is_missing(
    pytester: pytest.Pytester,
) -> None:
    write_model(pytester, "m", CONFIG, FIXTURE_SUITE)
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "1")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*no stages.yaml for m yet: ran discovery first*"])
    assert (pytester.path / "models" / "m" / "stages.yaml").exists()


def test_a_narrower_selection_calibrates_only_what_it_feeds(
    pytester: pytest.Pytester,
) -> None:
    config = (
        CONFIG
        + """
  test_other_ci.py:
    json_file: "test_other0/res.json"
    paths: {accuracy: "summary.accuracy"}
"""
    )
    files = dict(FIXTURE_SUITE)
    files["suite/test_other_ci.py"] = """
        import json
        OTHER_MIN_ACCURACY = 0.5

        def test_other(tmp_path):
            (tmp_path / "res.json").write_text(json.dumps({"summary": {"accuracy": 1}}))
    """
    files["suite/test_unrelated.py"] = "def test_x():\n    pass\n"
    write_model(pytester, "m", config, files)
    result = pytester.runpytest(
        "suite/test_other_ci.py",
        "suite/test_unrelated.py",
        "--tune-model",
        "m",
        "--tune-repeats",
        "2",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*this selection feeds 1 stage(s): other_accuracy*",
            "*1 deselected*",
        ]
    )
    plan = json.loads((run_dir_of(pytester) / "plan.json").read_text())
    assert plan["stages"] == ["other_accuracy"]


def test_extra_env_and_args_apply_to_their_file_only(pytester: pytest.Pytester) -> None:
    config = CONFIG.replace(
        "metric_sources:",
        'extra_env:\n  test_fix_ci.py: {DEMO_MODE: "fast"}\n'
        'pytest_extra_args:\n  test_fix_ci.py: ["--concurrency", "16"]\n'
        "metric_sources:",
    )
    write_model(
        pytester,
        "m",
        config,
        {
            "conftest.py": """
                def pytest_addoption(parser):
                    parser.addoption("--concurrency", type=int, default=1)
            """,
            "suite/test_fix_ci.py": """
                import json, os
                FIX_MIN_ACCURACY = 0.5

                def test_one(request, tmp_path):
                    assert os.environ["DEMO_MODE"] == "fast"
                    assert request.config.getoption("concurrency") == 16
                    (tmp_path / "res.json").write_text(
                        json.dumps({"summary": {"accuracy": 0.7}}))
            """,
        },
    )
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "2")
    assert result.ret == 0, result.stdout.str()
    assert "DEMO_MODE" not in os.environ
    bad = CONFIG.replace(
        "metric_sources:",
        'pytest_extra_args:\n  test_fix_ci.py: ["--no-such-option"]\nmetric_sources:',
    )
    (pytester.path / "models" / "m" / "config.yaml").write_text(bad)
    (pytester.path / "models" / "m" / "stages.yaml").unlink()
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "1")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*test_fix_ci.py*--no-such-option*in-process*"])


def test_invalid_and_non_finite_observations_never_count(
    pytester: pytest.Pytester,
) -> None:
    config = CONFIG.replace(
        'paths: {accuracy: "summary.accuracy"}',
        'paths: {accuracy: "summary.accuracy"}\n'
        '    observation_validity: "summary.valid"\n'
        '    sample_counts: {total: "summary.n", ok: "summary.done"}\n'
        "    expected_samples: 4",
    )
    write_model(
        pytester,
        "m",
        config,
        {
            "suite/test_fix_ci.py": """
                import os
                FIX_MIN_ACCURACY = 0.5
                CASES = {
                    "1": '{"accuracy": NaN, "valid": true, "n": 4, "done": 4}',
                    "2": '{"accuracy": 0.7, "valid": false, "n": 4, "done": 4}',
                    "3": '{"accuracy": 0.7, "valid": true, "n": 4, "done": 3}',
                    "4": '{"accuracy": 0.7, "valid": true, "n": 5, "done": 5}',
                    "5": '{"accuracy": "0.7", "valid": true, "n": 4, "done": 4}',
                    "6": '{"accuracy": true, "valid": true, "n": 4, "done": 4}',
                    "7": '{"accuracy": 0.7, "valid": true, "n": 4, "done": 4}',
                }

                def test_one(tmp_path):
                    k = os.environ["TUNE_CI_REPEAT"]
                    (tmp_path / "res.json").write_text(
                        '{"summary": ' + CASES[k] + "}")
                    assert False, "threshold assert: an observation all the same"
            """
        },
    )
    result = pytester.runpytest(
        "--tune-model", "m", "--tune-repeats", "7", "--tune-max-passes", "1"
    )
    assert result.ret == 1
    run_dir = run_dir_of(pytester)
    reasons = {k: read_run(run_dir, "fix_accuracy", k)["reason"] for k in range(1, 8)}
    assert "test_one0/res.json::summary.accuracy" in str(reasons[1])
    assert "finite" in str(reasons[1])
    assert "summary.valid is False, not true" in str(reasons[2])
    assert "partial samples: ok=3 of total=4" in str(reasons[3])
    assert "total=5, expected_samples=4" in str(reasons[4])
    assert "expected a number, got '0.7'" in str(reasons[5])
    assert "expected a number, got True" in str(reasons[6])
    seventh = read_run(run_dir, "fix_accuracy", 7)
    assert (seventh["status"], seventh["outcome"]) == ("ok", "threshold")
    result.stdout.fnmatch_lines(["*complete: 1/7 stage-runs*"])


def test_lines_a_healthy_server_prints_are_no_crash(pytester: pytest.Pytester) -> None:
    write_model(
        pytester,
        "m",
        CONFIG,
        {
            "suite/test_fix_ci.py": """
                import json, time
                FIX_MIN_ACCURACY = 0.5

                def test_one(tmp_path, tmp_path_factory):
                    log = tmp_path_factory.mktemp("server") / "server.log"
                    for line in ("connect: Connection refused (health poll)",
                                 "OSError: Address already in use, trying 30001",
                                 "AssertionError in health check, retrying"):
                        print(line, flush=True)
                        with open(log, "a") as fh:
                            fh.write(line + "\\n")
                        time.sleep(0.3)
                    (tmp_path / "res.json").write_text(
                        json.dumps({"summary": {"accuracy": 0.7}}))
            """
        },
    )
    result = pytester.runpytest("--tune-model", "m", "--tune-repeats", "1")
    assert result.ret == 0, result.stdout.str()
    record = read_run(run_dir_of(pytester), "fix_accuracy", 1)
    assert [a["outcome"] for a in record["attempts"]] == ["ok"]  # type: ignore[union-attr]
