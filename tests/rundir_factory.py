"""Build a complete synthetic calibration run dir from plain Python values.

Other test modules import this: ``make_run_dir(root, [stage(...), ...])``
writes, under ``root``, a small test file holding the threshold constants and
a run dir with plan.json, stages.yaml, config.yaml, precheck.json and every
``<stage>/run{k}.json``, as a finished calibration would leave them.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path
from typing import Any

import yaml

from pytest_tune_ci import literals
from pytest_tune_ci import rundir
from pytest_tune_ci.rundir import Attempt
from pytest_tune_ci.rundir import Plan
from pytest_tune_ci.rundir import StageRun
from pytest_tune_ci.stages import Display
from pytest_tune_ci.stages import JsonRef
from pytest_tune_ci.stages import Location
from pytest_tune_ci.stages import Stage
from pytest_tune_ci.stages import StageMetric
from pytest_tune_ci.stages import dump_stages


T0 = datetime(2026, 12, 3, 21, 0, 0, tzinfo=timezone.utc)
TEST_FILE = "tests/test_demo_ci.py"
RUN_DIR = ".tune-runs/demo-20261203T210000Z"
DEFAULT_PRECHECK: dict[str, Any] = {
    "gpu": {"model": "NVIDIA H20", "count": 8, "driver": "550.54.15"},
    "versions": {"torch": "2.5.1"},
    "git": {"sha": "0123456789abcdef0123456789abcdef01234567", "branch": "calib"},
    "checks": [],
    "ok": True,
}


@dataclass
class Metric:
    """One threshold literal and the metric it calibrates."""

    key: str  # a metric key of the registry: accuracy, throughput_qps, ...
    symbol: str
    current: int | float | None
    worst: str = "min"
    label: str = ""
    scale: float = 1
    digits: int = 2
    inner_key: str | None = None  # nested: SYMBOL[outer_key][inner_key]
    outer_key: int | str | None = None
    integer: bool = False
    json_path: str | None = "summary.value"  # None: NEEDS_CONFIG

    @property
    def display(self) -> Display:
        return Display(self.label or self.key, self.scale, self.digits)


@dataclass
class StageSpec:
    key: str
    group: str
    metrics: list[Metric]
    values: dict[str, list[float | None]]  # metric key -> one value per run
    test: str = TEST_FILE
    title: str = ""
    context: dict[str, int | float | str | None] = field(default_factory=dict)
    concurrency: int | str | None = None
    gpus: int = 2
    samples: tuple[int | None, int | None] = (50, 50)  # (total, ok)
    threshold_file: str | None = None
    variant: str | None = None


def stage(key: str, group: str, metrics: list[Metric], **values: Any) -> StageSpec:
    """Shorthand: ``stage("x_speed", "speed", [m], throughput_qps=[1.3, 1.2])``."""
    return StageSpec(key=key, group=group, metrics=metrics, values=values)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _literal_text(metric: Metric) -> str:
    return repr(metric.current) if metric.current is not None else "None"


def _test_source(metrics: list[Metric]) -> str:
    """A test module with every constant, bare or nested, in first-seen order."""
    bare: dict[str, str] = {}
    nested: dict[str, dict[int | str, dict[str, str]]] = {}
    for m in metrics:
        if m.inner_key is None:
            bare[m.symbol] = _literal_text(m)
        else:
            outer = nested.setdefault(m.symbol, {})
            outer.setdefault(m.outer_key if m.outer_key is not None else 16, {})
            outer[m.outer_key if m.outer_key is not None else 16][m.inner_key] = (
                _literal_text(m)
            )
    lines = ['"""Synthetic CI test holding threshold constants."""', ""]
    lines += [f"{name} = {text}" for name, text in bare.items()]
    for name, outers in nested.items():
        lines.append(f"{name} = {{")
        for outer, inner in outers.items():
            lines.append(f"    {outer!r}: {{")
            lines += [f"        {k!r}: {v}," for k, v in inner.items()]
            lines.append("    },")
        lines.append("}")
    lines += ["", "", "def test_demo():", "    assert True", ""]
    return "\n".join(lines)


def _locations(
    spec: StageSpec, thresholds_file: str, source: str
) -> dict[str, Location]:
    module = ast.parse(source)
    out: dict[str, Location] = {}
    for m in spec.metrics:
        outer = None
        if m.inner_key is not None:
            outer = m.outer_key if m.outer_key is not None else 16
        loc = Location(thresholds_file, m.symbol, outer, m.inner_key)
        lit = literals.find(module, loc)
        line = lit.node.lineno if lit is not None else 0
        out[m.key] = Location(thresholds_file, m.symbol, outer, m.inner_key, line)
    return out


def _stage_record(spec: StageSpec, locs: dict[str, Location]) -> Stage:
    metrics = {
        m.key: StageMetric(
            key=m.key,
            location=locs[m.key],
            worst="max" if m.worst == "max" else "min",
            display=m.display,
            json_file="result0/results.json" if m.json_path else None,
            json_path=m.json_path,
            status="OK" if m.json_path else "NEEDS_CONFIG",
            integer=m.integer,
            current=m.current,
        )
        for m in spec.metrics
    }
    counts = {
        "total": JsonRef("result0/results.json", "summary.total"),
        "ok": JsonRef("result0/results.json", "summary.ok"),
    }
    return Stage(
        key=spec.key,
        test=spec.test,
        title=spec.title or spec.key.replace("_", " ").title(),
        group=spec.group,
        base=spec.key.rsplit("_", 1)[0],
        variant=spec.variant,
        context_vars=list(spec.context),
        context=dict(spec.context),
        concurrency=spec.concurrency,
        gpus=spec.gpus,
        threshold_file=spec.threshold_file,
        sample_counts=counts,
        metrics=metrics,
    )


def make_run_dir(
    root: Path,
    stages: list[StageSpec],
    *,
    repeats: int | None = None,
    model: str = "demo",
    config: dict[str, Any] | None = None,
    precheck: dict[str, Any] | None = DEFAULT_PRECHECK,
    dirty: bool = False,
    workers: int = 1,
    missing: set[tuple[str, int]] | None = None,
    runs: dict[tuple[str, int], dict[str, Any]] | None = None,
    schedule: dict[tuple[str, int], tuple[float, float]] | None = None,
    run_dir: str = RUN_DIR,
) -> Path:
    """Write the test file(s) and a finished run dir under ``root``.

    ``missing`` leaves those stage-runs out; ``runs`` overrides fields of a
    stage-run record (``status``, ``attempts`` as dicts, ``worker`` ...);
    ``schedule`` gives a stage-run's (start offset, duration) in seconds,
    otherwise each pytest pass (test file, repeat) runs for 10 s after the
    previous one.
    """
    n = repeats if repeats is not None else len(next(iter(stages[0].values.values())))
    missing = missing or set()
    runs = runs or {}
    schedule = schedule or {}
    out = root / run_dir
    out.mkdir(parents=True, exist_ok=True)

    by_file: dict[str, list[Metric]] = {}
    for spec in stages:
        by_file.setdefault(spec.threshold_file or spec.test, []).extend(spec.metrics)
        by_file.setdefault(spec.test, [])
    sources = {f: _test_source(ms) for f, ms in by_file.items()}
    for f, text in sources.items():
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(text, encoding="utf-8")

    records: dict[str, Stage] = {}
    for spec in stages:
        thresholds = spec.threshold_file or spec.test
        records[spec.key] = _stage_record(
            spec, _locations(spec, thresholds, sources[thresholds])
        )
    (out / rundir.STAGES_SNAPSHOT).write_text(dump_stages(records), encoding="utf-8")

    cfg: dict[str, Any] = {"name": model, "test_globs": ["tests/test_*_ci.py"]}
    cfg.update(config or {})
    (out / rundir.CONFIG_SNAPSHOT).write_text(
        yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8"
    )
    if precheck is not None:
        (out / rundir.PRECHECK).write_text(json.dumps(precheck, indent=2) + "\n")
    if dirty:
        (out / rundir.WORKSPACE_DIFF).write_text("diff --git a/x b/x\n")

    tests = list(dict.fromkeys(spec.test for spec in stages))
    passes = {
        (t, k): i
        for i, (k, t) in enumerate((k, t) for k in range(1, n + 1) for t in tests)
    }
    last_end = T0
    for spec in stages:
        for k in range(1, n + 1):
            if (spec.key, k) in missing:
                continue
            offset, duration = schedule.get(
                (spec.key, k), (10.0 * passes[(spec.test, k)], 10.0)
            )
            start = T0 + timedelta(seconds=offset)
            end = start + timedelta(seconds=duration)
            last_end = max(last_end, end)
            total, ok = spec.samples
            data: dict[str, Any] = {
                "stage": spec.key,
                "run": k,
                "status": "ok",
                "reason": "",
                "outcome": "ok",
                "metrics": {m.key: spec.values[m.key][k - 1] for m in spec.metrics},
                "sample_counts": {"total": total, "ok": ok},
                "attempts": [
                    {
                        "outcome": "ok",
                        "reason": "",
                        "duration_s": duration,
                        "gpus": [0, 1],
                        "started_at": iso(start),
                    }
                ],
                "duration_s": duration,
                "started_at": iso(start),
                "finished_at": iso(end),
                "git_sha": DEFAULT_PRECHECK["git"]["sha"],
                "test_logic_sha256": "f" * 64,
                "basetemp": f"_pytest/demo/basetemp_run{k}",
                "log": f"_pytest/demo/run{k}.log",
                "worker": "main",
                "gpus": [0, 1],
                "problems": [],
                "tests": {"passed": 1},
            }
            data.update(runs.get((spec.key, k), {}))
            data["attempts"] = [
                a if isinstance(a, Attempt) else Attempt(**a) for a in data["attempts"]
            ]
            rundir.write_stage_run(out, StageRun(**data))

    plan = Plan(
        model=model,
        stages=[s.key for s in stages],
        repeats=n,
        git_sha=DEFAULT_PRECHECK["git"]["sha"],
        git_branch="calib",
        dirty=dirty,
        logic_hashes={t: "e" * 64 for t in tests},
        plugin_version="0.1.0",
        started_at=iso(T0),
        stages_yaml=f"models/{model}/stages.yaml",
        config_sha256="c" * 64,
        rootdir=str(root),
        finished_at=iso(last_end + timedelta(seconds=1)),
        host="gpu-host-1",
        python_version="3.11.9",
        pytest_version="9.0.0",
        workers=workers,
    )
    rundir.write_plan(out, plan)
    return out


def demo_stages() -> list[StageSpec]:
    """Three stages of one test file: accuracy, WER (with a count) and speed.

    Run 5 of the speed stage is an outlier (throughput 0.61).
    """
    wer = [
        Metric(
            "wer_below_50_corpus", "DEMO_WER_BELOW_50_CORPUS_MAX", 0.0231, "max",
            "Corpus WER ≤50% (%)", 100, 2,
        ),
        Metric(
            "n_above_50", "DEMO_N_ABOVE_50_MAX", 1, "max", "Samples >50% WER", 1, 0,
            integer=True,
        ),
    ]  # fmt: skip
    speed = [
        Metric(
            "throughput_qps", "_DEMO_P95", 1.318, "min", "Throughput (req/s)", 1, 3,
            inner_key="throughput_qps", outer_key=16,
        ),
        Metric(
            "latency_mean_s", "_DEMO_P95", 10.32, "max", "Latency mean (s)", 1, 3,
            inner_key="latency_mean_s", outer_key=16,
        ),
    ]  # fmt: skip
    return [
        StageSpec(
            key="demo_accuracy",
            group="accuracy",
            title="DEMO Accuracy",
            metrics=[
                Metric("accuracy", "DEMO_MIN_ACCURACY", 0.56, "min", "Acc (%)", 100, 2)
            ],
            values={"accuracy": [0.58, 0.56127, 0.57, 0.575, 0.59]},
            context={"MAX_SAMPLES": 50, "MAX_TOKENS": None},
        ),
        StageSpec(
            key="demo_wer",
            group="wer",
            title="DEMO Wer",
            metrics=wer,
            values={
                "wer_below_50_corpus": [0.0201, 0.0238764, 0.0199, 0.021, 0.0222],
                "n_above_50": [0.0, 2.0, 1.0, 0.0, 1.0],
            },
            context={"MAX_SAMPLES": 50, "MAX_TOKENS": None},
        ),
        StageSpec(
            key="demo_speed",
            group="speed",
            title="DEMO Speed",
            metrics=speed,
            values={
                "throughput_qps": [1.3187, 1.2934, 1.3051, 1.31, 0.61],
                "latency_mean_s": [10.1234, 10.4561, 10.2, 10.3, 10.25],
            },
            context={"CONCURRENCY": 16},
            concurrency=16,
        ),
    ]
