"""Shared pieces of the benchmarks: projects, timed commands, figures.

Every benchmark builds a throw-away project (a model config, test files and a
``pytest.ini``) under a temporary directory, runs pytest in subprocesses from
there and returns :class:`Figure` rows for the table that ``run.py`` prints.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any


PYTHON = sys.executable
# Equal for every alternative: no .pytest_cache reads or writes.
NO_CACHE = ["-p", "no:cacheprovider"]


@dataclass
class Figure:
    """One row of the results table."""

    bench: str
    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None  # None: reported, no target
    detail: str = ""

    def cells(self) -> list[str]:
        verdict = {True: "met", False: "MISSED", None: ""}[self.ok]
        return [
            self.bench,
            self.name,
            f"{self.value:.3g} {self.unit}".strip(),
            self.target,
            verdict,
            self.detail,
        ]


@dataclass
class Context:
    """What every benchmark gets from the runner."""

    work: Path  # a fresh directory for this benchmark's projects
    quick: bool
    rounds: int
    log: Path  # commands and their output are appended here
    notes: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"  [{stamp}] {text}", flush=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"# {text}\n")


def write_project(root: Path, model: str, config: str, files: dict[str, str]) -> Path:
    """A project with one model: models/<model>/config.yaml, files, pytest.ini."""
    root.mkdir(parents=True, exist_ok=True)
    model_dir = root / "models" / model
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    (root / "pytest.ini").write_text(
        "[pytest]\ntune_models_dir = models\n", encoding="utf-8"
    )
    return root


def no_matplotlib(root: Path) -> dict[str, str]:
    """Environment additions under which ``import matplotlib`` fails: no plots.

    The report draws no plots without matplotlib; this prices the plots
    without a plugin option for it.
    """
    shim = root / "no-matplotlib" / "matplotlib"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('raise ImportError("hidden by the bench")\n')
    path = os.pathsep.join(
        p for p in (str(shim.parent), os.environ.get("PYTHONPATH", "")) if p
    )
    return {"PYTHONPATH": path}


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every measured command: no inherited pytest options."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "TUNE_CI_")) and k != "CUDA_VISIBLE_DEVICES"
    }
    env.update(extra or {})
    return env


@dataclass
class Ran:
    seconds: float
    returncode: int
    output: str
    started: float  # time.time() just before the launch


def run(
    cmd: Sequence[str],
    cwd: Path,
    ctx: Context,
    *,
    env: dict[str, str] | None = None,
    ok_codes: Sequence[int] = (0,),
    timeout: float = 600,
) -> Ran:
    """Run ``cmd`` and time it (wall clock); fail loudly on an unexpected code."""
    started = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=env or bench_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - t0
    with open(ctx.log, "a", encoding="utf-8") as fh:
        fh.write(
            f"$ (cd {cwd}; {' '.join(cmd)})  # {seconds:.2f}s rc={proc.returncode}\n"
        )
        fh.write(proc.stdout[-4000:] + "\n")
    if proc.returncode not in ok_codes:
        raise RuntimeError(
            f"{' '.join(cmd)} (in {cwd}) exited {proc.returncode}:\n"
            + proc.stdout[-3000:]
        )
    return Ran(seconds, proc.returncode, proc.stdout, started)


def pytest_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "pytest", *args]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``median (min–max, n=N)`` for a detail cell."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return (
        f"{median(values):.2f} ({min(values):.2f}–{max(values):.2f}, n={len(values)})"
    )


def parse_utc(text: str) -> float:
    """An ISO stamp of the run dir (``...Z``) as a time.time() value."""
    stamp = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def stage_runs(run_dir: Path) -> list[dict[str, Any]]:
    """Every ``<stage>/run{k}.json`` of a run dir."""
    found = []
    for path in sorted(run_dir.glob("*/run*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "stage" in data:
            found.append(data)
    return found


def sim_gpus(path: Path, count: int, used_mib: int = 300) -> None:
    """Write a simulated GPU host (atomically: the gate may be polling it)."""
    gpus = [
        {
            "index": i,
            "name": "NVIDIA H20",
            "memory_total_mib": 97871,
            "memory_used_mib": used_mib,
            "processes": [],
        }
        for i in range(count)
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"gpus": gpus}), encoding="utf-8")
    os.replace(tmp, path)
