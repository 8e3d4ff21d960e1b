"""Figure 5: discovery, report and apply-plan at scale, and peak memory.

- Discovery over 1,000 generated test files (three thresholds each: a bare
  accuracy minimum and a nested per-concurrency speed dict), both as
  ``pytest --tune-model big --tune-discover`` and as ``discover_model``
  called in-process (bench/tool.py, a fresh interpreter).
- Report and apply-plan of a synthetic finished run dir, 50 stages x 20
  repeats x 10 metrics (tests/rundir_factory.py): ``write_report`` without
  plots plus ``apply.build_plan``; the plots are timed on their own.
- Peak RSS of a calibration of 1,000 items x 5 repeats against plain
  ``pytest --count 5`` and one plain run (``getrusage(RUSAGE_CHILDREN)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common import NO_CACHE
from common import PYTHON
from common import Context
from common import Figure
from common import bench_env
from common import median
from common import no_matplotlib
from common import pytest_cmd
from common import run
from common import spread
from common import write_project


TOOL = str(Path(__file__).resolve().parent / "tool.py")
DISCOVER_FILES = 1000
REPORT_SHAPE = (50, 20, 10)  # stages, repeats, metrics
MEM_FILES = 50
MEM_TESTS = 20  # x MEM_FILES = 1,000 items
MEM_REPEATS = 5


def _tool(ctx: Context, cwd: Path, *args: str) -> dict[str, Any]:
    ran = run([PYTHON, TOOL, *args], cwd, ctx)
    data = json.loads(ran.output.strip().splitlines()[-1])
    assert isinstance(data, dict)
    return data


# -- discovery ---------------------------------------------------------------


def _discover_file(i: int) -> str:
    return f'''"""Generated CI test {i}: accuracy and speed against a server."""

import json

CONCURRENCY = 8
MAX_SAMPLES = 50

S{i:04d}_MIN_ACCURACY = 0.5
_S{i:04d}_P95 = {{
    8: {{
        "throughput_qps": 3.1,
        "latency_mean_s": 0.42,
    }},
}}


def test_s{i:04d}(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({{"acc": 0.7, "qps": 3.2, "lat": 0.4}}))
    assert 0.7 >= S{i:04d}_MIN_ACCURACY
'''


def _discover_config(n: int) -> str:
    sources = "".join(
        f"""  test_s{i:04d}_ci.py:
    json_file: "test_s{i:04d}0/results.json"
    paths: {{accuracy: "acc", throughput_qps: "qps", latency_mean_s: "lat"}}
"""
        for i in range(n)
    )
    return f"""name: big
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
{sources}"""


def _discovery(ctx: Context) -> list[Figure]:
    n = DISCOVER_FILES
    files = {f"suite/test_s{i:04d}_ci.py": _discover_file(i) for i in range(n)}
    root = write_project(ctx.work / "discover", "big", _discover_config(n), files)
    cli = []
    for _ in range(ctx.rounds):
        cmd = pytest_cmd("--tune-model", "big", "--tune-discover", *NO_CACHE)
        cli.append(run(cmd, root, ctx).seconds)
    data = _tool(ctx, root, "discover", str(root), "big", str(max(2, ctx.rounds)))
    # The first in-process call also pays for first-time caches; report the rest.
    direct = data["discover_s"][1:]
    loads = data["load_s"][1:]
    stages = data["stages"]
    return [
        Figure(
            "5",
            f"discovery of {n} files: pytest --tune-discover (whole command)",
            median(cli),
            "s",
            "≤ 3 s",
            median(cli) <= 3,
            f"{spread(cli)} s; {stages} stages written",
        ),
        Figure(
            "5",
            f"discovery of {n} files: discover_model() in-process",
            median(direct),
            "s",
            "≤ 3 s",
            median(direct) <= 3,
            f"{spread(direct)} s: scanning {data['scan_s']:.2f} s, writing "
            f"stages.yaml {data['dump_s']:.2f} s (+ load_model "
            f"{median(loads):.2f} s)",
        ),
    ]


# -- report and apply-plan ---------------------------------------------------


def _report(ctx: Context) -> list[Figure]:
    stages, repeats, metrics = REPORT_SHAPE
    root = ctx.work / "report"
    root.mkdir(parents=True)
    made = _tool(
        ctx, root, "rundir", str(root), str(stages), str(repeats), str(metrics)
    )
    run_dir = made["run_dir"]
    data = _tool(ctx, root, "report", run_dir, str(root), str(max(3, ctx.rounds)))
    reports = data["write_report_s"]
    plans = data["apply_plan_s"]
    both = [a + b for a, b in zip(reports, plans, strict=True)]
    shape = f"{stages} stages x {repeats} repeats x {metrics} metrics"
    figures = [
        Figure(
            "5",
            f"report (no plots) + apply-plan, {shape}",
            median(both),
            "s",
            "≤ 1 s",
            median(both) <= 1,
            f"write_report {spread(reports)} s (build_report "
            f"{median(data['build_report_s']):.2f} s), build_plan {spread(plans)} s; "
            f"{data['plan_metrics']} planned metrics",
        ),
        Figure(
            "5",
            f"rundir.completeness() of {stages * repeats} stage-runs",
            1000 * data["completeness_s"],
            "ms",
            "",
            None,
            "the session calls it after every stage-run (ETA): O(N^2) reads",
        ),
    ]
    fixed = _tool(ctx, root, "report", run_dir, str(root), "3", "libyaml")
    both_fixed = [
        a + b
        for a, b in zip(fixed["write_report_s"], fixed["apply_plan_s"], strict=True)
    ]
    figures.append(
        Figure(
            "5",
            "same, YAML parsed by libyaml (the recommended one-line fix)",
            median(both_fixed),
            "s",
            "",
            None,
            f"write_report {spread(fixed['write_report_s'])} s, "
            f"build_plan {spread(fixed['apply_plan_s'])} s",
        )
    )
    big = _tool(ctx, root, "png", str(metrics), str(repeats))
    small = _tool(ctx, root, "png", "1", "5")
    figures.append(
        Figure(
            "5",
            "stage PNG, leaner drawing (fixed margins, <=10 x ticks) / now",
            big["lean"] / big["current"],
            "x",
            "",
            None,
            f"{metrics} panels x {repeats} runs {big['current']:.2f} -> "
            f"{big['lean']:.2f} s; 1 panel x 5 runs {small['current']:.3f} -> "
            f"{small['lean']:.3f} s",
        )
    )
    if ctx.quick:
        ctx.notes.append("timing the report's plots is skipped in --quick")
        return figures
    # Plotting all 50 stages takes over a minute here: time 10 of them.
    few = 10
    sub = root / "plots"
    sub.mkdir()
    made = _tool(ctx, sub, "rundir", str(sub), str(few), str(repeats), str(metrics))
    drawn = _tool(ctx, sub, "plots", made["run_dir"])
    per_png = drawn["write_report_s"] / few
    figures.append(
        Figure(
            "5",
            f"report plots: one stage PNG of {metrics} panels x {repeats} runs",
            per_png,
            "s",
            "",
            None,
            f"{few} stages took {drawn['write_report_s']:.1f} s (+ matplotlib "
            f"import {drawn['imports_s']:.2f} s); {stages} stages: "
            f"~{per_png * stages:.0f} s",
        )
    )
    return figures


# -- peak memory -------------------------------------------------------------


def _mem_file(i: int) -> str:
    cases = "".join(
        f"""

def test_c{j}(results):
    (results / "case_{j}.json").write_text(json.dumps({{"acc": 0.7}}))
"""
        for j in range(MEM_TESTS)
    )
    return f'''"""Generated: {MEM_TESTS} quick tests around a module fixture."""

import json

import pytest

M{i:02d}_MIN_ACCURACY = 0.5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")
{cases}'''


def _mem_config() -> str:
    sources = "".join(
        f"""  test_m{i:02d}_ci.py:
    json_file: "results0/case_0.json"
    paths: {{accuracy: "acc"}}
"""
        for i in range(MEM_FILES)
    )
    return f"""name: mem
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
{sources}"""


def _rss(
    ctx: Context, root: Path, *args: str, env: dict[str, str] | None = None
) -> float:
    """Peak RSS in MiB of ``pytest ARGS`` run in ``root``."""
    cmd = [PYTHON, TOOL, "maxrss", "--", *pytest_cmd(*args, "-q", *NO_CACHE)]
    ran = run(cmd, root, ctx, env=bench_env(env))
    data = json.loads(ran.output.strip().splitlines()[-1])
    if data["rc"] != 0:
        raise RuntimeError(
            f"pytest {' '.join(args)} exited {data['rc']}: {data['tail']}"
        )
    return float(data["maxrss_kib"]) / 1024


def _memory(ctx: Context) -> list[Figure]:
    files = {f"suite/test_m{i:02d}_ci.py": _mem_file(i) for i in range(MEM_FILES)}
    root = write_project(ctx.work / "memory", "mem", _mem_config(), files)
    run(pytest_cmd("--tune-model", "mem", "--tune-discover", *NO_CACHE), root, ctx)
    hidden = no_matplotlib(root)
    calib_args = ["--tune-model", "mem", "--tune-repeats", str(MEM_REPEATS)]
    calib_args += ["--tune-gpus", "none"]
    rows: dict[str, list[float]] = {
        "calib": [],
        "calib-noplots": [],
        "count5": [],
        "plain": [],
    }
    rounds = 1 if ctx.quick else 2
    for r in range(rounds):
        out = ["--tune-output-dir", str(root / "runs" / f"r{r}")]
        rows["calib"].append(_rss(ctx, root, *calib_args, *out))
        out = ["--tune-output-dir", str(root / "runs" / f"r{r}-np")]
        rows["calib-noplots"].append(_rss(ctx, root, *calib_args, *out, env=hidden))
        rows["count5"].append(_rss(ctx, root, "suite", "--count", str(MEM_REPEATS)))
        rows["plain"].append(_rss(ctx, root, "suite"))
    # What a separate plotting process would peak at (the report's plots of
    # the first calibration, redrawn in a fresh interpreter).
    cmd = [PYTHON, TOOL, "maxrss", "--", PYTHON, TOOL, "plots", str(root / "runs/r0")]
    plotter = json.loads(run(cmd, root, ctx).output.strip().splitlines()[-1])
    plot_mib = float(plotter["maxrss_kib"]) / 1024
    calib = median(rows["calib"])
    noplots = median(rows["calib-noplots"])
    count5 = median(rows["count5"])
    plain = median(rows["plain"])
    items = MEM_FILES * MEM_TESTS
    return [
        Figure(
            "5",
            f"peak RSS: calib - pytest --count {MEM_REPEATS} ({items} items)",
            calib - count5,
            "MiB",
            "≤ +30 MB",
            (calib - count5) * 1.048576 <= 30,
            f"calib {calib:.0f} MiB, --count {MEM_REPEATS} {count5:.0f} MiB, "
            f"one plain run {plain:.0f} MiB",
        ),
        Figure(
            "5",
            "peak RSS: calib without matplotlib - pytest --count 5",
            noplots - count5,
            "MiB",
            "",
            None,
            f"calib, no plots {noplots:.0f} MiB; calib - one plain run "
            f"{calib - plain:+.0f} MiB",
        ),
        Figure(
            "5",
            "peak RSS: a separate process drawing the same plots",
            plot_mib,
            "MiB",
            "",
            None,
            f"{plot_mib - count5:+.0f} MiB over --count {MEM_REPEATS}: what "
            "plotting in a child process would peak at",
        ),
    ]


def bench(ctx: Context) -> list[Figure]:
    figures = []
    ctx.say("scale: discovery")
    figures += _discovery(ctx)
    ctx.say("scale: report and apply-plan")
    figures += _report(ctx)
    ctx.say("scale: peak memory")
    figures += _memory(ctx)
    return figures
