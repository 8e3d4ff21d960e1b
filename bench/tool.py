"""In-process measurements, each in a fresh interpreter (run by scale.py).

    python bench/tool.py maxrss -- CMD ...        peak RSS (KiB) of CMD
    python bench/tool.py discover ROOT MODEL N    time load_model + discover_model
    python bench/tool.py rundir ROOT STAGES REPEATS METRICS
    python bench/tool.py report RUN_DIR ROOT N [libyaml]
                                                  time report (no plots), apply-plan
    python bench/tool.py plots RUN_DIR            time write_report with plots
    python bench/tool.py png PANELS RUNS          one stage PNG: plot.py vs leaner

Each prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parent.parent
SPEED_METRICS = [
    # (metric key, nested under _S<i>_P95[16]?)
    ("throughput_qps", True),
    ("output_tok_per_req_s", True),
    ("latency_mean_s", True),
    ("latency_p95_s", True),
    ("rtf_mean", True),
    ("rtf_p95", True),
    ("latency_max_s", False),
    ("ttfa_p95_s", False),
    ("text_ttft_p95_s", False),
    ("inter_chunk_p95_s", False),
]


def maxrss(cmd: list[str]) -> dict[str, Any]:
    """Peak RSS of the largest waited-for child: the pytest process itself."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "rc": proc.returncode,
        "maxrss_kib": peak,
        "tail": proc.stdout[-1500:].decode(),
    }


def discover(root: Path, model: str, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    from pytest_tune_ci.config import load_model
    from pytest_tune_ci.discover import discover_model

    imports = time.perf_counter() - t0
    loads, runs = [], []
    stages = 0
    for _ in range(n):
        t0 = time.perf_counter()
        cfg = load_model(root / "models", model, root)
        t1 = time.perf_counter()
        result = discover_model(cfg, root)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        runs.append(t2 - t1)
        stages = len(result.stages)
    # The split: scanning the sources versus writing stages.yaml.
    from pytest_tune_ci.discover import discover_stages
    from pytest_tune_ci.stages import dump_stages

    t0 = time.perf_counter()
    found, _problems = discover_stages(cfg, root)
    t1 = time.perf_counter()
    dump_stages(found)
    t2 = time.perf_counter()
    return {
        "imports_s": imports,
        "load_s": loads,
        "discover_s": runs,
        "scan_s": t1 - t0,
        "dump_s": t2 - t1,
        "stages": stages,
    }


def make_rundir(root: Path, stages: int, repeats: int, metrics: int) -> dict[str, Any]:
    """A finished synthetic run dir, built with the tests' own factory."""
    sys.path.insert(0, str(REPO / "tests"))
    import rundir_factory as rf

    rng = random.Random(7)
    specs = []
    from pytest_tune_ci.metrics import default_registry

    registry = default_registry()
    for i in range(stages):
        chosen = []
        values: dict[str, list[float | None]] = {}
        for key, nested in SPEED_METRICS[:metrics]:
            spec = registry[key]
            base = rng.uniform(1, 100)
            chosen.append(
                rf.Metric(
                    key,
                    f"_S{i:02d}_P95" if nested else f"S{i:02d}_{key.upper()}",
                    round(base, 3),
                    spec.worst,
                    spec.label,
                    spec.scale,
                    spec.digits,
                    inner_key=key if nested else None,
                    outer_key=16 if nested else None,
                )
            )
            values[key] = [
                round(base * rng.uniform(0.9, 1.1), 4) for _ in range(repeats)
            ]
        specs.append(
            rf.StageSpec(
                key=f"s{i:02d}_speed",
                group="speed",
                metrics=chosen,
                values=values,
                test=f"tests/test_s{i:02d}_ci.py",
                concurrency=16,
                context={"CONCURRENCY": 16},
            )
        )
    t0 = time.perf_counter()
    out = rf.make_run_dir(root, specs, repeats=repeats)
    # The factory records placeholder logic hashes; apply compares them with
    # the files, so record the real ones, as a calibration does.
    from pytest_tune_ci import rundir
    from pytest_tune_ci.planning import current_logic_hashes
    from pytest_tune_ci.stages import load_stages

    plan = rundir.read_plan(out)
    hashes = current_logic_hashes(load_stages(out / rundir.STAGES_SNAPSHOT), root)
    plan.logic_hashes = {k: v for k, v in hashes.items() if v is not None}
    rundir.write_plan(out, plan)
    return {"run_dir": str(out), "build_s": time.perf_counter() - t0}


def use_libyaml() -> None:
    """Make config.load_yaml parse with libyaml, as RESULTS.md recommends.

    Same duplicate-key constructor, C parser: what the one-line change to
    ``config._StrictLoader``'s base class would do, without editing it.
    """
    import yaml

    from pytest_tune_ci import config

    class CStrictLoader(yaml.CSafeLoader):
        pass

    CStrictLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, config._mapping_no_duplicates
    )
    config._StrictLoader = CStrictLoader


def report(run_dir: Path, root: Path, n: int, libyaml: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    from pytest_tune_ci import apply
    from pytest_tune_ci import plot
    from pytest_tune_ci import report as rep

    imports = time.perf_counter() - t0
    if libyaml:
        use_libyaml()
    # The <= 1 s figure excludes plotting: the report writes none without
    # matplotlib, which is what this makes it believe.
    plot.available = lambda: False
    reports, plans, builds = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        rep.build_report(run_dir)
        builds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = rep.write_report(run_dir)
        reports.append(time.perf_counter() - t0)
        if result.exit_code != 0:
            raise SystemExit(f"report refused: {result.lines}")
        t0 = time.perf_counter()
        plan = apply.build_plan(run_dir, root)
        plans.append(time.perf_counter() - t0)
    changes = sum(len(s.get("metrics", [])) for s in plan.get("stages", []))
    # What the session's ETA line costs after each stage-run: a full scan.
    from pytest_tune_ci import rundir

    planned = rundir.read_plan(run_dir)
    t0 = time.perf_counter()
    rundir.completeness(run_dir, planned)
    scan = time.perf_counter() - t0
    return {
        "completeness_s": scan,
        "imports_s": imports,
        "build_report_s": builds,
        "write_report_s": reports,
        "apply_plan_s": plans,
        "plan_metrics": changes,
    }


def plots(run_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    from pytest_tune_ci import plot
    from pytest_tune_ci import report as rep

    plot.available()  # imports matplotlib
    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep.write_report(run_dir)
    return {"imports_s": imports, "write_report_s": time.perf_counter() - t0}


def png(panels: int, runs: int) -> dict[str, Any]:
    """plot.stage_png against the same figure drawn the way RESULTS.md suggests.

    The suggestion: fixed margins instead of ``tight_layout`` (which lays the
    figure out by drawing it once more) and at most ~10 integer x ticks
    instead of one labelled tick per run.
    """
    import io

    from pytest_tune_ci import plot

    plt = plot._pyplot()
    from matplotlib.ticker import MaxNLocator

    ks = list(range(1, runs + 1))
    series = [
        plot.Series(f"metric {i}", [1 + 0.01 * k for k in ks], 1.0, 0.95)
        for i in range(panels)
    ]

    def lean() -> bytes:
        height = plot.PANEL_HEIGHT_IN * panels
        fig, axes = plt.subplots(
            panels, 1, figsize=(plot.PANEL_WIDTH_IN, height), squeeze=False
        )
        for ax, s in zip(axes[:, 0], series, strict=True):
            plot._panel(ax, ks, s)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        fig.suptitle("title")
        fig.subplots_adjust(
            left=0.14, right=0.97, top=1 - 0.45 / height, bottom=0.5 / height
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=plot.DPI, metadata={"Software": None})
        plt.close(fig)
        return buf.getvalue()

    def now() -> bytes:
        return bytes(plot.stage_png("title", ks, series))

    out: dict[str, Any] = {}
    for name, draw in (("current", now), ("lean", lean)):
        draw()  # warm-up: fonts, caches
        t0 = time.perf_counter()
        for _ in range(3):
            draw()
        out[name] = (time.perf_counter() - t0) / 3
    return out


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "maxrss":
        out = maxrss(args[1:] if args[:1] == ["--"] else args)
    elif cmd == "discover":
        out = discover(Path(args[0]), args[1], int(args[2]))
    elif cmd == "rundir":
        out = make_rundir(Path(args[0]), *(int(a) for a in args[1:4]))
    elif cmd == "report":
        out = report(Path(args[0]), Path(args[1]), int(args[2]), "libyaml" in args)
    elif cmd == "plots":
        out = plots(Path(args[0]))
    elif cmd == "png":
        out = png(int(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown command {cmd!r}; see {__file__}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
