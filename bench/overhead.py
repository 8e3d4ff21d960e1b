"""Figure 1: what a calibration costs over running the suite N times.

A generated suite of 20 files x 10 tests of 10 ms each, a module-scoped
fixture per file, every test writing a result JSON. Alternatives, interleaved
round by round (this machine is noisy):

- ``calib``: ``pytest --tune-model bench --tune-repeats 5`` (precheck, report
  and plots included);
- ``calib-noprecheck``: the same with ``--tune-skip-precheck`` (only to price
  the precheck);
- ``repeat``: ``pytest --count 5 --repeat-scope module`` (pytest-repeat; it
  builds each module fixture once, not five times);
- ``plain5``: five sequential plain ``pytest`` runs of the suite;
- ``subproc``: one ``python -m pytest FILE --basetemp=...`` per file per
  repeat, one after the other (what the legacy tool does).
"""

from __future__ import annotations

import json
import shutil
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


FILES = 20
TESTS = 10
SLEEP_S = 0.01
REPEATS = 5
MODEL = "bench"


def _test_file(i: int) -> str:
    cases = "".join(
        f'''
def test_case_{j}(results):
    time.sleep({SLEEP_S})
    value = 0.6 + 0.01 * {j}
    (results / "case_{j}.json").write_text(
        json.dumps({{"summary": {{"accuracy": value, "total": 10}}}})
    )
    assert value >= F{i:02d}_MIN_ACCURACY
'''
        for j in range(TESTS)
    )
    return f'''"""Generated: {TESTS} tests of {SLEEP_S * 1000:.0f} ms around a module fixture."""

import json
import time

import pytest


F{i:02d}_MIN_ACCURACY = 0.5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # A module-scoped resource, the way CI suites start one server per file.
    yield tmp_path_factory.mktemp("results")
{cases}'''


def _config() -> str:
    sources = "".join(
        f"""  test_f{i:02d}_ci.py:
    json_file: "results0/case_0.json"
    paths: {{accuracy: "summary.accuracy"}}
"""
        for i in range(FILES)
    )
    return f"""name: {MODEL}
test_globs: ["suite/test_*_ci.py"]
stage_base_strip_prefix: "test_"
stage_base_strip_suffix: "_ci"
metric_sources:
{sources}"""


def make_suite(root: Path) -> Path:
    files = {f"suite/test_f{i:02d}_ci.py": _test_file(i) for i in range(FILES)}
    return write_project(root, MODEL, _config(), files)


def _calib(ctx: Context, root: Path, tag: str, *extra: str) -> float:
    out = root / "runs" / tag
    ran = run(
        pytest_cmd(
            "--tune-model",
            MODEL,
            "--tune-repeats",
            str(REPEATS),
            "--tune-gpus",
            "none",
            "--tune-output-dir",
            str(out),
            "-q",
            *NO_CACHE,
            *extra,
        ),
        root,
        ctx,
    )
    if "report:" not in ran.output:
        raise RuntimeError(f"calibration {tag} wrote no report:\n{ran.output[-2000:]}")
    _breakdown(out, ran.started, ran.seconds, ctx)
    return ran.seconds


def _breakdown(run_dir: Path, started: float, seconds: float, ctx: Context) -> None:
    """Where a calibration's time went, from its stage-run records."""
    records = stage_runs(run_dir)
    starts = [parse_utc(r["started_at"]) for r in records]
    ends = [parse_utc(r["finished_at"]) for r in records]
    loop = sum(float(r["duration_s"]) for r in records)
    ideal = len(records) * TESTS * SLEEP_S
    ctx.notes.append(
        f"calib breakdown: start-up to first attempt {min(starts) - started:.2f}s, "
        f"attempts {loop:.2f}s for {len(records)} stage-runs "
        f"(sleep alone {ideal:.2f}s), last attempt to exit "
        f"{started + seconds - max(ends):.2f}s (report, plots, exit)"
    )


def _plain5(ctx: Context, root: Path) -> float:
    total = 0.0
    for _ in range(REPEATS):
        total += run(pytest_cmd("suite", "-q", *NO_CACHE), root, ctx).seconds
    return total


def _repeat(ctx: Context, root: Path) -> float:
    cmd = pytest_cmd(
        "suite", "--count", str(REPEATS), "--repeat-scope", "module", "-q", *NO_CACHE
    )
    return run(cmd, root, ctx).seconds


def _subproc(ctx: Context, root: Path, tag: str) -> float:
    total = 0.0
    base = root / "legacy" / tag
    base.mkdir(parents=True, exist_ok=True)
    for k in range(1, REPEATS + 1):
        for i in range(FILES):
            test = f"suite/test_f{i:02d}_ci.py"
            basetemp = base / f"f{i:02d}_run{k}"
            cmd = pytest_cmd(test, f"--basetemp={basetemp}", "-q", *NO_CACHE)
            total += run(cmd, root, ctx).seconds
            # The legacy tool reads the result JSON back out of the basetemp.
            json.loads((basetemp / "results0" / "case_0.json").read_text())
    shutil.rmtree(base, ignore_errors=True)
    return total


def _one(ctx: Context, root: Path, name: str, r: int) -> float:
    if name == "calib":
        return _calib(ctx, root, f"r{r}")
    if name == "calib-noprecheck":
        return _calib(ctx, root, f"r{r}-np", "--tune-skip-precheck")
    if name == "repeat":
        return _repeat(ctx, root)
    if name == "plain5":
        return _plain5(ctx, root)
    return _subproc(ctx, root, f"r{r}")


def bench(ctx: Context) -> list[Figure]:
    root = make_suite(ctx.work / "overhead")
    ctx.say("overhead: discovery and a warm-up run")
    run(pytest_cmd("--tune-model", MODEL, "--tune-discover", *NO_CACHE), root, ctx)
    run(pytest_cmd("suite", "-q", *NO_CACHE), root, ctx)  # compiles the files
    times: dict[str, list[float]] = {
        "calib": [],
        "calib-noprecheck": [],
        "repeat": [],
        "plain5": [],
        "subproc": [],
    }
    for r in range(ctx.rounds):
        ctx.say(f"overhead: round {r + 1}/{ctx.rounds}")
        # Rotate the order so no alternative always runs first (or last).
        names = list(times)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            seconds = _one(ctx, root, name, r)
            times[name].append(seconds)
            ctx.say(f"overhead:   {name} {seconds:.2f}s")
    calib = times["calib"]
    ratios = {
        "repeat": median([c / x for c, x in zip(calib, times["repeat"], strict=True)]),
        "plain5": median([c / x for c, x in zip(calib, times["plain5"], strict=True)]),
        "subproc": median(
            [x / c for c, x in zip(calib, times["subproc"], strict=True)]
        ),
    }
    precheck = median(
        [a - b for a, b in zip(calib, times["calib-noprecheck"], strict=True)]
    )
    seconds = ", ".join(f"{k} {spread(v)}" for k, v in times.items())
    return [
        Figure(
            "1 overhead",
            "calib / pytest-repeat (--count 5 --repeat-scope module)",
            ratios["repeat"],
            "x",
            "≤ 1.3x",
            ratios["repeat"] <= 1.3,
            "median of per-round ratios",
        ),
        Figure(
            "1 overhead",
            "calib / 5 sequential plain pytest runs",
            ratios["plain5"],
            "x",
            "≤ 1.05x",
            ratios["plain5"] <= 1.05,
        ),
        Figure(
            "1 overhead",
            "subprocess-per-file-per-repeat / calib",
            ratios["subproc"],
            "x",
            "≥ 5x",
            ratios["subproc"] >= 5,
        ),
        Figure(
            "1 overhead",
            "precheck cost (calib - calib --tune-skip-precheck)",
            precheck,
            "s",
            "",
            None,
            "seconds: " + seconds,
        ),
    ]
