"""Per-stage PNG plots: each metric's per-run values and its thresholds.

matplotlib is an optional extra (``pytest-tune-ci[plot]``). The report draws
its plots in a child process (``python -m pytest_tune_ci.plot``, jobs as JSON
on stdin), so matplotlib's import time and memory never land in the pytest
process. The PNG carries no software tag or timestamp and is drawn at a fixed
size and dpi, so re-rendering the same values gives the same bytes.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import subprocess
import sys
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


DPI = 100
PANEL_WIDTH_IN = 6.4
PANEL_HEIGHT_IN = 2.6


@dataclass(frozen=True)
class Series:
    """One metric, in display units; ``values`` has None for a missing run."""

    label: str
    values: list[float | None]
    current: float | None
    proposed: float | None


def _locator(**kwargs: Any) -> Any:
    ticker = importlib.import_module("matplotlib.ticker")
    return ticker.MaxNLocator(**kwargs)


def _pyplot() -> Any:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg", force=True)
    return importlib.import_module("matplotlib.pyplot")


def available() -> bool:
    """Whether matplotlib is installed (found, not imported: that is slow)."""
    return importlib.util.find_spec("matplotlib") is not None


@dataclass(frozen=True)
class Job:
    path: str  # where the PNG goes
    title: str
    runs: list[int]
    series: list[Series]


def draw_all(jobs: list[Job], timeout_s: float = 600) -> str | None:
    """Draw every job in a child process; None, or why no plot was drawn."""
    if not jobs:
        return None
    payload = json.dumps([asdict(job) for job in jobs])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest_tune_ci.plot"],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the plot process failed ({exc})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the plot process failed: {last}"
    return None


def _main() -> int:
    from . import atomic

    for raw in json.load(sys.stdin):
        series = [Series(**s) for s in raw["series"]]
        png = stage_png(raw["title"], raw["runs"], series)
        atomic.write_bytes(Path(raw["path"]), png)
    return 0


def stage_png(title: str, runs: list[int], series: list[Series]) -> bytes:
    """One panel per metric: values per run, current and proposed as lines."""
    plt = _pyplot()
    rc = {"svg.hashsalt": "pytest-tune-ci", "path.simplify": False}
    with plt.rc_context(rc):
        height = PANEL_HEIGHT_IN * len(series)
        fig, axes = plt.subplots(
            len(series), 1, figsize=(PANEL_WIDTH_IN, height), squeeze=False
        )
        try:
            for ax, s in zip(axes[:, 0], series, strict=True):
                _panel(ax, runs, s)
            fig.suptitle(title)
            # Fixed margins: tight_layout measures every text extent, which
            # was most of the drawing time.
            fig.subplots_adjust(
                left=0.14,
                right=0.97,
                top=1 - 0.45 / height,
                bottom=0.5 / height,
                hspace=0.5,
            )
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        finally:
            plt.close(fig)
    return buf.getvalue()


def _panel(ax: Any, runs: list[int], s: Series) -> None:
    xs = [k for k, v in zip(runs, s.values, strict=True) if v is not None]
    ys = [v for v in s.values if v is not None]
    ax.plot(xs, ys, marker="o", linestyle="-", color="tab:blue", label="observed")
    if s.current is not None:
        ax.axhline(s.current, color="tab:red", linestyle="--", label="current")
    if s.proposed is not None:
        ax.axhline(s.proposed, color="tab:green", linestyle=":", label="proposed")
    ax.set_ylabel(s.label)
    ax.set_xlabel("run")
    ax.xaxis.set_major_locator(_locator(nbins=10, integer=True))
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)


if __name__ == "__main__":
    raise SystemExit(_main())
