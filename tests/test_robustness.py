"""Robustness matrix: kill -9 and resume, xdist, bad inputs, process hygiene.

The subprocess runs here block matplotlib (plots are an optional extra) and
skip hypothesis' pytest plugin: both only cost start-up time, and 20 kills
must fit in seconds.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_model


FAST = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]


@pytest.fixture(scope="module")
def no_plots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH entry under which ``import matplotlib`` fails."""
    root = tmp_path_factory.mktemp("noplots")
    (root / "matplotlib").mkdir()
    (root / "matplotlib" / "__init__.py").write_text(
        'raise ImportError("plots are off in the robustness tests")\n'
    )
    return root


def fast_env(no_plots: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(no_plots), env.get("PYTHONPATH", "")) if p
    )
    env.pop("PYTEST_ADDOPTS", None)
    return env


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *FAST, *args]


# -- kill -9 at random points, then --tune-resume -------------------------------

KILL_CONFIG = """
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

KILL_SUITE = {
    "suite/test_a_ci.py": """
        import json, os, time

        A_MIN_ACCURACY = 0.5
        _A_P95 = {1: {"throughput_qps": 2.0}}

        def test_a(tmp_path):
            k = int(os.environ["TUNE_CI_REPEAT"])
            time.sleep(0.1)
            (tmp_path / "res.json").write_text(
                json.dumps({"acc": 0.6 + k / 100, "qps": 2.0 + k / 10}))
    """,
    "suite/test_b_ci.py": """
        import json, os, time

        B_WER_MAX_CORPUS = 0.1

        def test_b(tmp_path):
            k = int(os.environ["TUNE_CI_REPEAT"])
            time.sleep(0.1)
            (tmp_path / "res.json").write_text(json.dumps({"wer": 0.05 + k / 1000}))
    """,
}
KILL_STAGES = ("a_accuracy", "a_speed", "b_wer")
KILL_REPEATS = 3
KILLS = 20
PHASES = ("planning", "mid-repeat", "mid-write")


def _log_marks(run_dir: Path) -> tuple[int, int]:
    """(attempt headers, outcome lines) over every stage-run log so far."""
    started = ended = 0
    for log in run_dir.glob("_pytest/*/run*.log"):
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        started += len(re.findall(r"^===== run \d+ attempt \d+ started", text, re.M))
        ended += text.count("\n===== outcome ")
    return started, ended


def _kill_at(proc: subprocess.Popen[bytes], run_dir: Path, phase: str, rng: random.Random) -> bool:
    """SIGKILL ``proc`` in ``phase``; False when it ended before that point."""
    if phase == "planning":
        time.sleep(rng.uniform(0.05, 0.6))
    else:
        want = rng.randint(1, 3)
        index = 0 if phase == "mid-repeat" else 1
        base = _log_marks(run_dir)[index]
        deadline = time.monotonic() + 15
        while _log_marks(run_dir)[index] < base + want:
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.003)
        # Inside the test's 0.1 s sleep, or right after the attempt ended,
        # while the harvest and the stage-run records are being written.
        time.sleep(rng.uniform(0, 0.09) if index == 0 else rng.uniform(0, 0.006))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _check_records(run_dir: Path, seen: dict[Path, bytes]) -> None:
    """Every record parses; a complete one never changes once written."""
    for path in run_dir.glob("*/run*.json"):
        data = path.read_bytes()
        record = json.loads(data)  # atomic writes: never half a file
        if record["status"] != "ok":
            continue
        old = seen.setdefault(path, data)
        assert old == data, f"{path} was rewritten after it was complete"


def test_kill_9_at_random_points_then_resume_gives_exactly_n_runs(
    pytester: pytest.Pytester, no_plots: Path
) -> None:
    write_model(pytester, "m", KILL_CONFIG, KILL_SUITE)
    env = fast_env(no_plots)
    rng = random.Random(20261203)
    kills: dict[str, int] = dict.fromkeys(PHASES, 0)
    chains: list[tuple[Path, dict[Path, bytes]]] = []
    launches = 0
    while sum(kills.values()) < KILLS:
        run_dir = pytester.path / f"run{len(chains)}"
        seen: dict[Path, bytes] = {}
        chains.append((run_dir, seen))
        for _ in range(5):
            if sum(kills.values()) >= KILLS:
                break
            launches += 1
            assert launches < 3 * KILLS, "the kills never landed"
            if (run_dir / "plan.json").exists():
                args = ["--tune-resume", str(run_dir)]
            else:
                args = [
                    "--tune-model",
                    "m",
                    f"--tune-repeats={KILL_REPEATS}",
                    f"--tune-output-dir={run_dir}",
                ]
            proc = subprocess.Popen(
                pytest_cmd(*args, "--tune-gpus=none"),
                cwd=pytester.path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            phase = rng.choice(PHASES)
            if _kill_at(proc, run_dir, phase, rng):
                kills[phase] += 1
            else:
                assert proc.returncode == 0  # it finished the whole plan
            _check_records(run_dir, seen)
    assert all(kills.values()), kills  # every phase was hit
    expected = sorted((s, k) for s in KILL_STAGES for k in range(1, KILL_REPEATS + 1))
    for run_dir, seen in chains:
        if (run_dir / "plan.json").exists():
            args = ["--tune-resume", str(run_dir)]
        else:
            args = ["--tune-model", "m", f"--tune-repeats={KILL_REPEATS}",
                    f"--tune-output-dir={run_dir}"]
        final = subprocess.run(
            pytest_cmd(*args, "--tune-gpus=none"),
            cwd=pytester.path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert final.returncode == 0, final.stdout + final.stderr
        found = {
            (p.parent.name, int(p.stem[3:])): json.loads(p.read_text())
            for p in run_dir.glob("*/run*.json")
        }
        assert sorted(found) == expected
        assert all(r["status"] == "ok" for r in found.values())
        assert not list(run_dir.rglob("*.tune-tmp"))
        _check_records(run_dir, seen)
        for path, data in seen.items():
            assert path.read_bytes() == data
        plan = json.loads((run_dir / "plan.json").read_text())
        assert (plan["stages"], plan["repeats"]) == (list(KILL_STAGES), KILL_REPEATS)


# -- xdist: 8 workers, many short stage-runs ------------------------------------

XDIST_FILES = 8
XDIST_REPEATS = 3
XDIST_CONFIG = """
name: m
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
""" + "".join(
    f"""  test_x{i}_ci.py:
    json_file: "test_x{i}0/res.json"
    paths: {{accuracy: "acc"}}
"""
    for i in range(XDIST_FILES)
)
XDIST_SUITE = {
    f"suite/test_x{i}_ci.py": f"""
        import json, os, time

        X{i}_MIN_ACCURACY = 0.5

        def test_x{i}(tmp_path):
            k = int(os.environ["TUNE_CI_REPEAT"])
            time.sleep(0.05)
            (tmp_path / "res.json").write_text(json.dumps({{"acc": 0.6 + k / 100}}))
    """
    for i in range(XDIST_FILES)
}


def _strict_json(path: Path) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{path}: non-finite {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_eight_xdist_workers_lose_and_duplicate_no_stage_run(
    pytester: pytest.Pytester, no_plots: Path
) -> None:
    write_model(pytester, "m", XDIST_CONFIG, XDIST_SUITE)
    run_dir = pytester.path / "run"
    result = subprocess.run(
        pytest_cmd(
            "--tune-model",
            "m",
            f"--tune-repeats={XDIST_REPEATS}",
            "--tune-gpus=none",
            f"--tune-output-dir={run_dir}",
            "-n",
            "8",
        ),
        cwd=pytester.path,
        env=fast_env(no_plots),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    planned = sorted(
        (f"x{i}_accuracy", k)
        for i in range(XDIST_FILES)
        for k in range(1, XDIST_REPEATS + 1)
    )
    records = {
        (p.parent.name, int(p.stem[3:])): _strict_json(p)
        for p in run_dir.glob("*/run*.json")
    }
    assert sorted(records) == planned
    for (stage, k), record in records.items():
        assert isinstance(record, dict)
        assert record["status"] == "ok", record
        assert len(record["attempts"]) == 1, record["attempts"]
        log = run_dir / "_pytest" / f"test_{stage.split('_')[0]}_ci" / f"run{k}.log"
        headers = re.findall(r"^===== run .* started", log.read_text(), re.M)
        assert len(headers) == 1 and "attempt 1 started" in headers[0], headers
    assert len({r["worker"] for r in records.values()}) > 1  # type: ignore[index]
    for path in run_dir.rglob("*.json"):
        _strict_json(path)  # no corrupt or half-written JSON anywhere
    assert not list(run_dir.rglob("*.tune-tmp"))
    status = pytester.runpytest("-p", "no:cacheprovider", "--tune-status", str(run_dir))
    assert status.ret == 0
    data = json.loads(status.stdout.str())
    total = XDIST_FILES * XDIST_REPEATS
    assert (data["complete"], data["ok"], data["total"]) == (True, total, total)
    assert data["missing"] == []
    assert data["stages"] == {
        f"x{i}_accuracy": {"ok": XDIST_REPEATS, "total": XDIST_REPEATS}
        for i in range(XDIST_FILES)
    }


# -- process hygiene -------------------------------------------------------------

MARK = "tune-ci-robustness-server"
HYGIENE_KINDS = ("pass", "fail", "crash", "hang", "killed")
HYGIENE_CONFIG = """
name: h
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
watch_logs: ["server*/server.log"]
attempt_timeout_s: 1.5
metric_sources:
""" + "".join(
    f"""  test_{kind}_ci.py:
    json_file: "test_{kind}0/res.json"
    paths: {{accuracy: "acc"}}
"""
    for kind in HYGIENE_KINDS
)

SERVERS = '''
"""Test servers that note their pids (and their children's) in PIDS_DIR."""
import os, subprocess, sys, time
from pathlib import Path

MARK = "%s"
SERVER = r"""
import os, sys, time
out, mode = sys.argv[1], sys.argv[2]
if mode == "daemon":
    if os.fork():  # the launcher exits; the daemon is re-parented
        os._exit(0)
    os.setsid()
def note():
    with open(out, "a") as fh:
        fh.write(f"{os.getpid()}\\\\n")
note()
if os.fork() == 0:  # a worker of the server
    note()
time.sleep(300)
"""
LAUNCHES = []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and MARK.encode() in cmdline


def check_earlier_gone():
    """Record any server of an earlier attempt that is still running."""
    root = Path(os.environ["PIDS_DIR"])
    left = [
        int(pid)
        for path in root.glob("*.pids")
        for pid in path.read_text().split()
        if alive(int(pid))
    ]
    if left:
        with open(root / "leaks.txt", "a") as fh:
            fh.write(f"{os.environ['TUNE_CI_ATTEMPT']}: {left}\\n")


def start(mode="tree"):
    check_earlier_gone()
    out = Path(os.environ["PIDS_DIR"]) / f"{os.getpid()}-{time.time_ns()}.pids"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(out), mode, MARK],
        start_new_session=True,  # as real servers often do
    )
    deadline = time.monotonic() + 20
    while len(out.read_text().split() if out.exists() else []) < 2:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    return proc, [int(p) for p in out.read_text().split()]
''' % MARK

HYGIENE_SUITE = {
    "suite/servers.py": SERVERS,
    "suite/test_pass_ci.py": """
        import json, pytest, servers
        PASS_MIN_ACCURACY = 0.5

        @pytest.fixture(scope="module")
        def server():
            yield servers.start()
            # No teardown: a careless suite leaves its server behind.

        def test_pass(server, tmp_path):
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
    "suite/test_fail_ci.py": """
        import json, servers
        FAIL_MIN_ACCURACY = 0.9

        def test_fail(tmp_path):
            servers.start("daemon")
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
            assert 0.7 >= FAIL_MIN_ACCURACY
    """,
    "suite/test_crash_ci.py": """
        import json, os, time, servers
        CRASH_MIN_ACCURACY = 0.5

        def test_crash(tmp_path, tmp_path_factory):
            servers.start()
            log = tmp_path_factory.mktemp("server") / "server.log"
            if os.environ["TUNE_CI_ATTEMPT"] == "1":
                log.write_text("Router failed to start: worker 0 exited\\n")
                time.sleep(60)
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
    "suite/test_hang_ci.py": """
        import json, os, time, servers
        HANG_MIN_ACCURACY = 0.5

        def test_hang(tmp_path):
            servers.start("daemon")
            if os.environ["TUNE_CI_ATTEMPT"] == "1":
                time.sleep(60)
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
    "suite/test_killed_ci.py": """
        import json, os, signal, servers
        KILLED_MIN_ACCURACY = 0.5

        def test_killed(tmp_path):
            proc, pids = servers.start()
            if os.environ["TUNE_CI_ATTEMPT"] == "1":
                proc.send_signal(signal.SIGKILL)  # its worker is orphaned
                proc.wait()
                raise RuntimeError(
                    f"Command 'server' died with {signal.Signals(-proc.returncode)!r}."
                )
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
}


def _proc_alive(pid: int) -> bool:
    """Running (not a zombie) and still one of the suite's servers."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and MARK.encode() in cmdline


def test_no_process_of_the_calibration_outlives_its_attempt(
    pytester: pytest.Pytester, no_plots: Path
) -> None:
    write_model(pytester, "h", HYGIENE_CONFIG, HYGIENE_SUITE)
    pids_dir = pytester.path / "pids"
    pids_dir.mkdir()
    # Not children of the calibrating pytest; one even looks like a server.
    foreign = [
        subprocess.Popen(["sleep", "300"]),
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)", MARK],
            start_new_session=True,
        ),
    ]
    try:
        result = subprocess.run(
            pytest_cmd(
                "--tune-model",
                "h",
                "--tune-repeats=1",
                "--tune-gpus=none",
                "--tune-output-dir=run",
            ),
            cwd=pytester.path,
            env=fast_env(no_plots, PIDS_DIR=str(pids_dir)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outcomes = {
            kind: [
                a["outcome"]
                for a in json.loads(
                    (pytester.path / "run" / f"{kind}_accuracy" / "run1.json").read_text()
                )["attempts"]
            ]
            for kind in HYGIENE_KINDS
        }
        assert outcomes == {
            "pass": ["ok"],
            "fail": ["threshold"],
            "crash": ["crash", "ok"],
            "hang": ["timeout", "ok"],
            "killed": ["killed", "ok"],
        }
        started = [
            int(pid) for p in pids_dir.glob("*.pids") for pid in p.read_text().split()
        ]
        assert len(started) == 2 * 8  # a server and its worker per attempt
        assert [pid for pid in started if _proc_alive(pid)] == []
        # Each attempt's servers were gone before the next attempt started.
        assert not (pids_dir / "leaks.txt").exists(), (pids_dir / "leaks.txt").read_text()
        assert [p.poll() for p in foreign] == [None, None]
    finally:
        for proc in foreign:
            proc.kill()
            proc.wait()
