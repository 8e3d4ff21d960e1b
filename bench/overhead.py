"""Figure 1: what a calibration costs over running the suite N times.

A generated suite of 20 files x 10 tests of 10 ms each, a module-scoped
fixture per file, every test writing a result JSON. Alternatives, interleaved
round by round (this machine is noisy):

- ``calib``: ``pytest --tune-model bench --tune-repeats 5`` (precheck, report
  and plots included);
- ``calib-noplots``: the same where matplotlib cannot be imported (the
  report then draws no plots), to price the plots;
- ``repeat``: ``pytest --count 5 --repeat-scope module`` (pytest-repeat; it
  builds each module fixture once, not five times);
- ``plain5``: five sequential plain ``pytest`` runs of the suite;
- ``subproc``: one ``python -m pytest FILE --basetemp=...`` per file per
  repeat, one after the other (what the legacy tool does).

The precheck is priced on its own: ``--tune-precheck`` against
``--tune-stages-list``, two no-test commands with the same start-up.

All of it runs with bytecode caching on (see run.py). Process start-up is what
``subproc`` pays a hundred times, so one extra pair, ``calib`` and ``subproc``
with ``PYTHONDONTWRITEBYTECODE=1`` (as this machine and many CI images set),
shows how that ratio depends on it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from common import NO_CACHE
from common import Context
from common import Figure
from common import bench_env
from common import median
from common import no_matplotlib
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
# As this machine runs Python: no pyc written, none but site-packages' read
# (an empty PYTHONPYCACHEPREFIX counts as unset).
NO_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": ""}


def _test_file(i: int) -> str:
    cases = "".join(
        f"""
def test_case_{j}(results):
    time.sleep({SLEEP_S})
    value = 0.6 + 0.01 * {j}
    (results / "case_{j}.json").write_text(
        json.dumps({{"summary": {{"accuracy": value, "total": 10}}}})
    )
    assert value >= F{i:02d}_MIN_ACCURACY
"""
        for j in range(TESTS)
    )
    return f'''"""{TESTS} tests of {SLEEP_S * 1000:.0f} ms, a module fixture."""

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


@dataclass
class Breakdown:
    startup_s: float  # launch to the first attempt
    per_run_ms: float  # attempt time per stage-run beyond the tests' sleep
    tail_s: float  # last attempt to exit: report, plots, terminal summary


BREAKDOWNS: list[Breakdown] = []


def _calib(
    ctx: Context, root: Path, tag: str, env: dict[str, str] | None = None
) -> float:
    out = root / "runs" / tag
    cmd = pytest_cmd(
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
    )
    ran = run(cmd, root, ctx, env=bench_env(env))
    if "report:" not in ran.output:
        raise RuntimeError(f"calibration {tag} wrote no report:\n{ran.output[-2000:]}")
    if env is None:
        BREAKDOWNS.append(_breakdown(out, ran.started, ran.seconds))
    return ran.seconds


def _breakdown(run_dir: Path, started: float, seconds: float) -> Breakdown:
    """Where a calibration's time went, from its stage-run records."""
    records = stage_runs(run_dir)
    starts = [parse_utc(r["started_at"]) for r in records]
    ends = [parse_utc(r["finished_at"]) for r in records]
    loop = sum(float(r["duration_s"]) for r in records)
    return Breakdown(
        startup_s=min(starts) - started,
        per_run_ms=1000 * (loop / len(records) - TESTS * SLEEP_S),
        tail_s=started + seconds - max(ends),
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


def _subproc(
    ctx: Context, root: Path, tag: str, k: int, env: dict[str, str] | None = None
) -> float:
    """Repeat ``k`` the legacy way, times the number of repeats.

    One of the five repeats per round (a different one each round), times
    five: each repeat is the same 20 processes, and all five would take a
    minute or two a round on this machine.
    """
    total = 0.0
    base = root / "legacy" / tag
    base.mkdir(parents=True, exist_ok=True)
    for i in range(FILES):
        test = f"suite/test_f{i:02d}_ci.py"
        basetemp = base / f"f{i:02d}_run{k}"
        cmd = pytest_cmd(test, f"--basetemp={basetemp}", "-q", *NO_CACHE)
        total += run(cmd, root, ctx, env=bench_env(env)).seconds
        # The legacy tool reads the result JSON back out of the basetemp.
        json.loads((basetemp / "results0" / "case_0.json").read_text())
    shutil.rmtree(base, ignore_errors=True)
    return REPEATS * total


def _one(ctx: Context, root: Path, name: str, r: int) -> float:
    if name == "calib":
        return _calib(ctx, root, f"r{r}")
    if name == "calib-noplots":
        return _calib(ctx, root, f"r{r}-np", no_matplotlib(root))
    if name == "repeat":
        return _repeat(ctx, root)
    if name == "plain5":
        return _plain5(ctx, root)
    return _subproc(ctx, root, f"r{r}", r % REPEATS + 1)


def _precheck(ctx: Context, root: Path, pairs: int) -> list[float]:
    """The precheck's own cost: the same no-test command with and without it."""
    costs = []
    for _ in range(pairs):
        common = ["--tune-model", MODEL, "--tune-gpus", "none", *NO_CACHE]
        with_it = run(pytest_cmd(*common, "--tune-precheck"), root, ctx).seconds
        without = run(pytest_cmd(*common, "--tune-stages-list"), root, ctx).seconds
        costs.append(with_it - without)
    return costs


def _ratio(num: list[float], den: list[float]) -> float:
    return median([a / b for a, b in zip(num, den, strict=True)])


def bench(ctx: Context) -> list[Figure]:
    root = make_suite(ctx.work / "overhead")
    ctx.say("overhead: discovery and a warm-up run")
    run(pytest_cmd("--tune-model", MODEL, "--tune-discover", *NO_CACHE), root, ctx)
    run(pytest_cmd("suite", "-q", *NO_CACHE), root, ctx)  # fills the pyc caches
    times: dict[str, list[float]] = {
        "calib": [],
        "calib-noplots": [],
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
    nobc: tuple[float, float] | None = None
    if not ctx.quick:
        ctx.say("overhead: PYTHONDONTWRITEBYTECODE=1 pair")
        nobc_sub = _subproc(ctx, root, "nobc", 1, NO_BYTECODE)
        nobc = (nobc_sub, _calib(ctx, root, "nobc", NO_BYTECODE))
    precheck = _precheck(ctx, root, 3 if ctx.quick else 5)
    calib = times["calib"]
    noplots = times["calib-noplots"]
    to_repeat = _ratio(calib, times["repeat"])
    to_plain = _ratio(calib, times["plain5"])
    legacy = _ratio(times["subproc"], calib)
    listing = "; ".join(f"{k} {spread(v)} s" for k, v in times.items())
    ctx.notes.append("seconds per alternative: " + listing)
    figures = [
        Figure(
            "1",
            "calib / pytest-repeat --count 5 --repeat-scope module",
            to_repeat,
            "x",
            "≤ 1.3x",
            to_repeat <= 1.3,
            f"calib {spread(calib)} s, repeat {spread(times['repeat'])} s",
        ),
        Figure(
            "1",
            "calib / 5 sequential plain pytest runs",
            to_plain,
            "x",
            "≤ 1.05x",
            to_plain <= 1.05,
            f"plain x5 {spread(times['plain5'])} s",
        ),
        Figure(
            "1",
            "subprocess per file per repeat / calib",
            legacy,
            "x",
            "≥ 5x",
            legacy >= 5,
            f"subproc {spread(times['subproc'])} s (1 of 5 repeats per round, x5); "
            f"subproc / pytest-repeat {_ratio(times['subproc'], times['repeat']):.2f}x",
        ),
        Figure(
            "1",
            "without plots: calib / pytest-repeat, calib / plain x5",
            _ratio(noplots, times["repeat"]),
            "x",
            "",
            None,
            f"/ plain x5 {_ratio(noplots, times['plain5']):.2f}x; "
            f"calib without plots {spread(noplots)} s",
        ),
        Figure(
            "1",
            "precheck cost (--tune-precheck minus --tune-stages-list)",
            median(precheck),
            "s",
            "",
            None,
            f"{spread(precheck)} s; calib runs include it",
        ),
        Figure(
            "1",
            "calib: start-up to first attempt",
            median([b.startup_s for b in BREAKDOWNS]),
            "s",
            detail="collection, plan, precheck",
        ),
        Figure(
            "1",
            "calib: time per stage-run beyond the tests' sleep",
            median([b.per_run_ms for b in BREAKDOWNS]),
            "ms",
            detail=f"{TESTS} tests per stage-run (pytest's own per-test cost "
            f"included), {FILES * REPEATS} stage-runs",
        ),
        Figure(
            "1",
            "calib: last attempt to exit (report, 20 plots, summary)",
            median([b.tail_s for b in BREAKDOWNS]),
            "s",
        ),
    ]
    if nobc is not None:
        figures.insert(
            3,
            Figure(
                "1",
                "same, both with PYTHONDONTWRITEBYTECODE=1 (one pair)",
                nobc[0] / nobc[1],
                "x",
                "",
                None,
                f"subproc {nobc[0]:.1f} s, calib {nobc[1]:.1f} s (as this machine "
                "runs Python by default)",
            ),
        )
    return figures
