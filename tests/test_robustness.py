"""Robustness matrix: kill -9 and resume, xdist, bad inputs, process hygiene.

The subprocess runs here block matplotlib (plots are an optional extra) and
skip hypothesis' pytest plugin: both only cost start-up time, and 20 kills
must fit in seconds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from typing import NamedTuple

import pytest
import yaml
from conftest import write_model

import pytest_tune_ci.plot


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


def _kill_at(
    proc: subprocess.Popen[bytes], run_dir: Path, phase: str, rng: random.Random
) -> bool:
    """SIGKILL ``proc`` in ``phase``; False when it ended before that point.

    planning: a random delay into start-up, collection, planning (or the
    resume's clean-up); mid-repeat: inside the 1st to 3rd attempt it starts;
    mid-write: just after the 1st to 3rd attempt ended, while its harvest and
    stage-run records are written. Waiting for the 2nd or 3rd lets earlier
    stage-runs of the same launch complete, so the resumes have work to keep.
    """
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


def _calibrate_args(run_dir: Path) -> list[str]:
    """Resume once the run has a plan; before that, start it (again)."""
    if (run_dir / "plan.json").exists():
        return ["--tune-resume", str(run_dir), "--tune-gpus=none"]
    return [
        "--tune-model",
        "m",
        f"--tune-repeats={KILL_REPEATS}",
        f"--tune-output-dir={run_dir}",
        "--tune-gpus=none",
    ]


def test_kill_9_at_random_points_then_resume_gives_exactly_n_runs(
    pytester: pytest.Pytester, no_plots: Path
) -> None:
    write_model(pytester, "m", KILL_CONFIG, KILL_SUITE)
    env = fast_env(no_plots)
    rng = random.Random(20261203)
    kills = dict.fromkeys(PHASES, 0)
    # Chains of up to 5 kills, each kill followed by a resume (the next launch).
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
            assert launches < 3 * KILLS, f"the kills did not land: {kills}"
            proc = subprocess.Popen(
                pytest_cmd(*_calibrate_args(run_dir)),
                cwd=pytester.path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            phase = rng.choice(PHASES)
            killed = _kill_at(proc, run_dir, phase, rng)
            _check_records(run_dir, seen)
            if not killed:
                assert proc.returncode == 0  # it finished the whole plan first
                break
            kills[phase] += 1
    assert all(kills.values()), kills
    planned = sorted((s, k) for s in KILL_STAGES for k in range(1, KILL_REPEATS + 1))
    for run_dir, seen in chains:
        final = subprocess.run(
            pytest_cmd(*_calibrate_args(run_dir)),
            cwd=pytester.path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert final.returncode == 0, final.stdout + final.stderr
        records = {
            (p.parent.name, int(p.stem[3:])): json.loads(p.read_text())
            for p in run_dir.glob("*/run*.json")
        }
        assert sorted(records) == planned
        assert all(r["status"] == "ok" for r in records.values())
        assert not list(run_dir.rglob("*.tune-tmp"))
        plan = json.loads((run_dir / "plan.json").read_text())
        assert (plan["stages"], plan["repeats"]) == (list(KILL_STAGES), KILL_REPEATS)
        # What was complete before a kill is byte for byte what the run ends with.
        before = dict(seen)
        _check_records(run_dir, seen)
        assert {p: p.read_bytes() for p in before} == before


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


def _strict_json(path: Path) -> Any:
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
        assert record["status"] == "ok", record
        assert len(record["attempts"]) == 1, record["attempts"]
        log = run_dir / "_pytest" / f"test_{stage.split('_')[0]}_ci" / f"run{k}.log"
        headers = re.findall(r"^===== run .* started", log.read_text(), re.M)
        assert len(headers) == 1 and "attempt 1 started" in headers[0], headers
    workers = {r["worker"] for r in records.values()}
    assert len(workers) > 1 and "main" not in workers, workers
    assert _strict_json(run_dir / "plan.json")["workers"] == 8
    for path in run_dir.rglob("*.json"):
        _strict_json(path)  # no corrupt or half-written JSON anywhere
    assert not list(run_dir.rglob("*.tune-tmp"))
    status = pytester.runpytest(*FAST, "--tune-status", str(run_dir))
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

MARK = "@MARK@"
SERVER = r"""
import os, sys, time
out, mode = sys.argv[1], sys.argv[2]
if mode == "daemon":
    if os.fork():  # the launcher exits; the daemon is re-parented
        os._exit(0)
    os.setsid()
def note():
    with open(out, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
note()
if os.fork() == 0:  # a worker of the server
    note()
time.sleep(300)
"""


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
'''.replace("@MARK@", MARK)

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


def _started_pids(pids_dir: Path) -> list[int]:
    return [int(pid) for p in pids_dir.glob("*.pids") for pid in p.read_text().split()]


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
        outcomes = {}
        for kind in HYGIENE_KINDS:
            path = pytester.path / "run" / f"{kind}_accuracy" / "run1.json"
            outcomes[kind] = [
                a["outcome"] for a in json.loads(path.read_text())["attempts"]
            ]
        assert outcomes == {
            "pass": ["ok"],
            "fail": ["threshold"],
            "crash": ["crash", "ok"],
            "hang": ["timeout", "ok"],
            "killed": ["killed", "ok"],
        }
        started = _started_pids(pids_dir)
        assert len(started) == 2 * 8  # a server and its worker in each attempt
        assert [pid for pid in started if _proc_alive(pid)] == []
        leaks = pids_dir / "leaks.txt"
        # ... and each attempt's were gone before the next attempt started.
        assert not leaks.exists(), leaks.read_text()
        assert [p.poll() for p in foreign] == [None, None]
    finally:
        for proc in foreign:
            proc.kill()
            proc.wait()
        for pid in _started_pids(pids_dir):
            if _proc_alive(pid):  # only when the test fails: do not leak them
                os.kill(pid, signal.SIGKILL)


# -- the bad-input corpus ----------------------------------------------------------

CORPUS_CONFIG = """\
name: m
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
  test_a_ci.py:
    json_file: "test_a0/res.json"
    paths: {accuracy: "acc"}
  test_b_ci.py:
    json_file: "test_b0/res.json"
    paths: {corpus_wer: "wer"}
"""

# test_a writes suite/a_result.txt verbatim when it exists: the corpus changes
# what a repeat writes without changing the test's logic.
CORPUS_SUITE = {
    "suite/test_a_ci.py": """\
import json
from pathlib import Path

A_MIN_ACCURACY = 0.5
RESULT = Path(__file__).with_name("a_result.txt")


def test_a(tmp_path):
    text = RESULT.read_text() if RESULT.exists() else json.dumps({"acc": 0.7})
    (tmp_path / "res.json").write_text(text)
""",
    "suite/test_b_ci.py": """\
import json

B_WER_MAX_CORPUS = 0.1


def test_b(tmp_path):
    (tmp_path / "res.json").write_text(json.dumps({"wer": 0.05}))
""",
}


@pytest.fixture(scope="module")
def corpus_template(tmp_path_factory: pytest.TempPathFactory, no_plots: Path) -> Path:
    """A project with stages.yaml and a complete one-repeat run in done/."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.yaml").write_text(CORPUS_CONFIG)
    (root / "tox.ini").write_text("[pytest]\ntune_models_dir = models\n")
    for rel, text in CORPUS_SUITE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    args = ["--tune-model", "m", "--tune-gpus=none"]
    for extra in (["--tune-discover"], ["--tune-repeats=1", "--tune-output-dir=done"]):
        done = subprocess.run(
            pytest_cmd(*args, *extra),
            cwd=root,
            env=fast_env(no_plots),
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(root / "done" / "_pytest")  # not needed, and many files
    return root


CASES = Path(__file__).parent / "bad_inputs" / "cases.yaml"
CASE_KEYS = {"id", "files", "args", "ret", "message", "stream", "starts_run"}
CASE_KEYS |= {"reason", "env", "bug"}


class Bad(NamedTuple):
    """One entry of bad_inputs/cases.yaml (its header explains the fields)."""

    files: dict[str, Any]
    args: list[str]
    ret: int
    message: str
    stream: str = "err"
    starts_run: bool = False
    reason: str | None = None
    env: dict[str, str] | None = None


def _bad_inputs() -> list[Any]:
    data = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    params = []
    for raw in data["cases"]:
        assert set(raw) <= CASE_KEYS, (raw["id"], set(raw) - CASE_KEYS)
        args = string.Template(raw["args"]).substitute(data["aliases"])
        case = Bad(
            files=raw.get("files", {}),
            args=shlex.split(args),
            ret=raw["ret"],
            message=raw["message"],
            stream=raw.get("stream", "err"),
            starts_run=raw.get("starts_run", False),
            reason=raw.get("reason"),
            env=raw.get("env"),
        )
        marks = []
        if "bug" in raw:
            marks.append(pytest.mark.xfail(strict=True, reason=f"BUG: {raw['bug']}"))
        params.append(pytest.param(case, id=raw["id"], marks=marks))
    ids = [p.id for p in params]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return params


def _change(path: Path, change: Any) -> None:
    if change is None:
        path.unlink()
    elif isinstance(change, str):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(change)
    elif set(change) == {"replace"}:
        old, new = change["replace"]
        text = path.read_text()
        assert old in text, (path, old)
        path.write_text(text.replace(old, new, 1))
    elif set(change) == {"append"}:
        path.write_text(path.read_text() + change["append"])
    else:
        raise AssertionError(f"{path}: unknown change {change!r}")


def _tree(root: Path, skip: tuple[str, ...]) -> dict[str, tuple[object, ...]]:
    """Every file and directory under ``root``: size, mtime and content hash."""
    found: dict[str, tuple[object, ...]] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        if "__pycache__" in path.parts:
            continue  # pytest's own bytecode cache, not the plugin's doing
        if path.is_dir():
            found[rel] = ("dir",)
        else:
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = (st.st_size, st.st_mtime_ns, digest)
    return found


def _unwritable(root: Path) -> tuple[str, Path | None]:
    """A directory we cannot create a run dir under (a file when we are root)."""
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").write_text("")
    except OSError:
        return "locked", locked
    (locked / "probe").unlink()  # root ignores permission bits
    locked.chmod(0o700)
    locked.rmdir()
    (root / "plainfile").write_text("not a directory\n")
    return "plainfile", None


@pytest.mark.parametrize("case", _bad_inputs())
def test_bad_input_gives_one_clear_error_and_changes_nothing(
    pytester: pytest.Pytester,
    corpus_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: Bad,
) -> None:
    monkeypatch.setattr(pytest_tune_ci.plot, "available", lambda: False)  # speed
    for name, value in (case.env or {}).items():
        monkeypatch.setenv(name, value)
    root = pytester.path
    shutil.copytree(corpus_template, root, dirs_exist_ok=True)
    for rel, change in case.files.items():
        _change(root / rel, change)
    args = list(case.args)
    locked = None
    if any("{unwritable}" in a for a in args):
        where, locked = _unwritable(root)
        args = [a.replace("{unwritable}", where) for a in args]
    skip = ("run",) if case.starts_run else ()
    before = _tree(root, skip)
    try:
        result = pytester.runpytest(*FAST, *args)
    finally:
        if locked is not None:
            locked.chmod(0o700)
    out, err = result.stdout.str(), result.stderr.str()
    assert "Traceback" not in out + err
    assert "INTERNALERROR" not in out + err
    assert result.ret == case.ret, out + err
    stream = result.stderr if case.stream == "err" else result.stdout
    stream.fnmatch_lines([case.message])
    if case.stream == "err":
        assert len([line for line in err.splitlines() if "ERROR:" in line]) == 1, err
    assert _tree(root, skip) == before
    if case.starts_run:
        record = json.loads((root / "run" / "a_accuracy" / "run1.json").read_text())
        assert record["status"] == "incomplete"
        assert case.reason is not None
        assert fnmatch.fnmatch(record["reason"], case.reason), record["reason"]
