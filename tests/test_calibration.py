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
