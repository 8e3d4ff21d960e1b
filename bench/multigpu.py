"""Figure 2: the speed-up of ``-n 8`` over a serial calibration on 8 GPUs.

16 stage-runs (8 test files x 2 repeats) of one 3 s test each, on 8 simulated
GPUs (``--tune-gpus sim:gpus.json``). The tests sleep, so the run is I/O-bound
even on 2 cores; what the cores do limit is starting 8 xdist workers, which
each import pytest and the plugins and collect the suite. That start-up is
reported on its own: launch to each worker's first attempt.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from common import NO_CACHE
from common import Context
from common import Figure
from common import bench_env
from common import median
from common import parse_utc
from common import pytest_cmd
from common import run
from common import sim_gpus
from common import spread
from common import stage_runs
from common import write_project


FILES = 8
REPEATS = 2
GPUS = 8
WORKERS = 8
TEST_S = 3.0
PROJECT_S = 60.0
MODEL = "mg"


def _config() -> str:
    sources = "".join(
        f"""  test_g{i}_ci.py:
    json_file: "test_g{i}0/res.json"
    paths: {{accuracy: "acc"}}
"""
        for i in range(FILES)
    )
    return f"""name: {MODEL}
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
gpu_wait_s: 120
metric_sources:
{sources}"""


def _test_file(i: int) -> str:
    return f'''"""Generated: one {TEST_S:g} s GPU test that writes its accuracy."""

import json
import os
import time

G{i}_MIN_ACCURACY = 0.5


def test_g{i}(tmp_path):
    starts = os.environ.get("BENCH_STARTS")
    if starts:  # the plain xdist run: when did each test start?
        with open(starts, "a") as fh:
            fh.write(f"{{time.time()!r}}\\n")
    time.sleep({TEST_S})
    (tmp_path / "res.json").write_text(json.dumps({{"acc": 0.7}}))
'''


@dataclass
class Timing:
    seconds: float
    first_start_s: list[float]  # per worker: launch to its first attempt
    loop_s: float  # first attempt start to last attempt end
    tail_s: float  # last attempt end to exit: workers stop, report, plots
    report_s: float  # last attempt end to report.md written


def _calibrate(ctx: Context, root: Path, tag: str, *extra: str) -> Timing:
    out = root / "runs" / tag
    cmd = pytest_cmd(
        "--tune-model",
        MODEL,
        "--tune-repeats",
        str(REPEATS),
        "--tune-gpus",
        "sim:gpus.json",
        "--tune-output-dir",
        str(out),
        "-q",
        *NO_CACHE,
        *extra,
    )
    ran = run(cmd, root, ctx)
    records = stage_runs(out)
    if len(records) != FILES * REPEATS or any(r["status"] != "ok" for r in records):
        raise RuntimeError(f"{tag}: incomplete run in {out}:\n{ran.output[-2000:]}")
    first: dict[str, float] = defaultdict(lambda: float("inf"))
    for r in records:
        start = parse_utc(r["started_at"])
        first[r["worker"]] = min(first[r["worker"]], start)
    starts = [parse_utc(r["started_at"]) for r in records]
    ends = [parse_utc(r["finished_at"]) for r in records]
    return Timing(
        seconds=ran.seconds,
        first_start_s=sorted(t - ran.started for t in first.values()),
        loop_s=max(ends) - min(starts),
        tail_s=ran.started + ran.seconds - max(ends),
        report_s=(out / "report.md").stat().st_mtime - max(ends),
    )


def bench(ctx: Context) -> list[Figure]:
    files = {f"suite/test_g{i}_ci.py": _test_file(i) for i in range(FILES)}
    root = write_project(ctx.work / "multigpu", MODEL, _config(), files)
    sim_gpus(root / "gpus.json", GPUS)
    run(pytest_cmd("--tune-model", MODEL, "--tune-discover", *NO_CACHE), root, ctx)
    serial: list[Timing] = []
    par: list[Timing] = []
    plain: list[float] = []
    plain_first: list[float] = []
    rounds = max(1, min(ctx.rounds, 2))  # a serial run takes ~50 s
    for r in range(rounds):
        order = ["par", "serial"] if r % 2 else ["serial", "par"]
        for name in order:
            if name == "serial":
                serial.append(_calibrate(ctx, root, f"serial{r}"))
                ctx.say(f"multigpu: serial {serial[-1].seconds:.1f}s")
            else:
                par.append(_calibrate(ctx, root, f"par{r}", "-n", str(WORKERS)))
                ctx.say(f"multigpu: -n {WORKERS} {par[-1].seconds:.1f}s")
        # xdist's own cost: the same suite once, plainly, on 8 workers.
        cmd = pytest_cmd("suite", "-n", str(WORKERS), "-q", *NO_CACHE)
        log = root / f"starts{r}.txt"
        ran = run(cmd, root, ctx, env=bench_env({"BENCH_STARTS": str(log)}))
        plain.append(ran.seconds - TEST_S)
        plain_first += [float(t) - ran.started for t in log.read_text().split()]
    speedup = median([s.seconds / p.seconds for s, p in zip(serial, par, strict=True)])
    loop_speedup = median(
        [s.loop_s / p.loop_s for s, p in zip(serial, par, strict=True)]
    )
    worker_first = [t for p in par for t in p.first_start_s]
    serial_first = [s.first_start_s[0] for s in serial]
    workers_seen = median([len(p.first_start_s) for p in par])
    ideal = TEST_S * FILES * REPEATS / WORKERS
    # Fixed costs do not grow with the test: project the efficiency for a
    # test of PROJECT_S from this run's fixed parts.
    fixed_serial = median([s.seconds for s in serial]) - FILES * REPEATS * TEST_S
    fixed_par = median([p.seconds for p in par]) - ideal
    runs = FILES * REPEATS
    projected = (runs * PROJECT_S + fixed_serial) / (
        WORKERS * (runs / WORKERS * PROJECT_S + fixed_par)
    )
    return [
        Figure(
            "2",
            f"-n {WORKERS} speed-up / ideal {WORKERS}x (wall clock)",
            100 * speedup / WORKERS,
            "%",
            "≥ 80%",
            speedup / WORKERS >= 0.8,
            f"speed-up {speedup:.2f}x; serial {spread([s.seconds for s in serial])} s, "
            f"-n {WORKERS} {spread([p.seconds for p in par])} s "
            f"(tests alone: {ideal:.0f} s)",
        ),
        Figure(
            "2",
            "same, attempts phase only (first attempt start to last end)",
            100 * loop_speedup / WORKERS,
            "%",
            "",
            None,
            f"loop speed-up {loop_speedup:.2f}x; "
            f"-n {WORKERS} loop {spread([p.loop_s for p in par])} s",
        ),
        Figure(
            "2",
            f"projected efficiency for a {PROJECT_S:g} s test (same fixed costs)",
            100 * projected,
            "%",
            "",
            None,
            f"fixed costs: serial {fixed_serial:.1f} s, -n {WORKERS} {fixed_par:.1f} s",
        ),
        Figure(
            "2",
            "worker start-up: launch to a worker's first attempt",
            median(worker_first),
            "s",
            "",
            None,
            f"{workers_seen:.0f} workers ran attempts; per worker "
            f"{spread(worker_first)} s; serial run {spread(serial_first)} s; "
            f"plain pytest -n {WORKERS}, launch to each test's start "
            f"{spread(plain_first)} s",
        ),
        Figure(
            "2",
            f"-n {WORKERS}: last attempt to exit (workers stop, report, plots)",
            median([p.tail_s for p in par]),
            "s",
            "",
            None,
            f"report.md written {spread([p.report_s for p in par])} s after the "
            f"last attempt; serial run: tail {spread([s.tail_s for s in serial])} s, "
            f"report.md after {spread([s.report_s for s in serial])} s",
        ),
        Figure(
            "2",
            f"xdist alone: plain pytest -n {WORKERS} of the suite, minus the test",
            median(plain),
            "s",
            "",
            None,
            f"wall - {TEST_S:g} s: start 8 workers, collect, stop",
        ),
    ]
