"""Figure 3: from a crash signature in a server log to the attempt's end.

The test's module fixture starts a "server" log under
``tmp_path_factory.mktemp("server")`` (matched by the config's
``watch_logs: ["server*/server.log"]``). On attempt 1 of every repeat the test
appends ``Fatal Python error: Segmentation fault`` to it, records
``time.time()`` in the run dir and hangs for 60 s, as a test blocked on a dead
server does. The watchdog must end the attempt; attempt 2 then passes. The
latency is attempt 1's ``started_at + duration_s`` minus the recorded time.

A second file prints a signature to its captured stdout instead (reported, no
target): the watchdog reads pytest's capture files too.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import NO_CACHE
from common import Context
from common import Figure
from common import median
from common import parse_utc
from common import pytest_cmd
from common import run
from common import spread
from common import stage_runs
from common import write_project


MODEL = "crash"
CONFIG = """
name: crash
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
watch_logs: ["server*/server.log"]
attempt_timeout_s: 120
metric_sources:
  test_log_ci.py:
    json_file: "test_log0/res.json"
    paths: {accuracy: "acc"}
  test_out_ci.py:
    json_file: "test_out0/res.json"
    paths: {accuracy: "acc"}
"""
COMMON = """
import json
import os
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    log.write_text("server ready\\n")
    yield log


def crash_now():
    return os.environ.get("TUNE_CI_ATTEMPT") == "1"


def mark_written(kind):
    run_dir = Path(os.environ["TUNE_CI_RUN_DIR"])
    k = os.environ["TUNE_CI_REPEAT"]
    (run_dir / f"written-{kind}-run{k}").write_text(repr(time.time()))
"""
FILES = {
    "suite/conftest.py": COMMON,
    "suite/test_log_ci.py": """
        import json
        import time

        from conftest import crash_now, mark_written

        LOG_MIN_ACCURACY = 0.5


        def test_log(server_log, tmp_path):
            if crash_now():
                with open(server_log, "a") as fh:
                    fh.write("Fatal Python error: Segmentation fault\\n")
                mark_written("log")
                time.sleep(60)  # blocked on the dead server
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
    "suite/test_out_ci.py": """
        import json
        import sys
        import time

        from conftest import crash_now, mark_written

        OUT_MIN_ACCURACY = 0.5


        def test_out(tmp_path):
            if crash_now():
                print("Fatal Python error: Aborted", flush=True)
                mark_written("out")
                time.sleep(60)
            (tmp_path / "res.json").write_text(json.dumps({"acc": 0.7}))
    """,
}


def _latencies(run_dir: Path, stage: str, kind: str) -> list[float]:
    found = []
    for record in stage_runs(run_dir):
        if record["stage"] != stage:
            continue
        k = record["run"]
        first = record["attempts"][0]
        if first["outcome"] == "ok" or len(record["attempts"]) < 2:
            raise RuntimeError(f"{stage} run {k}: the crash was not caught: {record}")
        written = float((run_dir / f"written-{kind}-run{k}").read_text())
        ended = parse_utc(first["started_at"]) + float(first["duration_s"])
        found.append(ended - written)
    return found


def bench(ctx: Context) -> list[Figure]:
    root = write_project(ctx.work / "crash", MODEL, CONFIG, FILES)
    run(pytest_cmd("--tune-model", MODEL, "--tune-discover", *NO_CACHE), root, ctx)
    repeats = 3 if ctx.quick else 6
    out = root / "runs" / "r"
    ran = run(
        pytest_cmd(
            "--tune-model",
            MODEL,
            "--tune-repeats",
            str(repeats),
            "--tune-gpus",
            "none",
            "--tune-output-dir",
            str(out),
            "-q",
            *NO_CACHE,
        ),
        root,
        ctx,
    )
    log = _latencies(out, "log_accuracy", "log")
    printed = _latencies(out, "out_accuracy", "out")
    records = stage_runs(out)
    outcomes = sorted({r["attempts"][0]["outcome"] for r in records})
    ctx.notes.append(
        f"attempt-1 outcomes {outcomes}; calibration took {ran.seconds:.1f}s "
        f"for {2 * repeats} crashing stage-runs"
    )
    first = next(r for r in records if r["stage"] == "log_accuracy")
    reason = json.dumps(first["attempts"][0]["reason"])
    return [
        Figure(
            "3",
            "crash signature in server log -> attempt ended (worst)",
            max(log),
            "s",
            "≤ 2 s",
            max(log) <= 2,
            f"median {median(log):.2f} s; {spread(log)} s; reason {reason}",
        ),
        Figure(
            "3",
            "crash signature in captured stdout -> attempt ended (worst)",
            max(printed),
            "s",
            "",
            None,
            f"median {median(printed):.2f} s; {spread(printed)} s",
        ),
    ]
