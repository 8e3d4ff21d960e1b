"""Per-stage PNG plots: each metric's per-run values and its thresholds.

matplotlib is an optional extra (``pytest-tune-ci[plot]``), imported lazily
with the Agg backend. The PNG carries no software tag or timestamp and is drawn
at a fixed size and dpi, so re-rendering the same values gives the same bytes.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass
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


def _pyplot() -> Any:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg", force=True)
    return importlib.import_module("matplotlib.pyplot")


def available() -> bool:
    """Whether matplotlib can be imported here."""
    try:
        _pyplot()
    except ImportError:
        return False
    return True


def stage_png(title: str, runs: list[int], series: list[Series]) -> bytes:
    """One panel per metric: values per run, current and proposed as lines."""
    plt = _pyplot()
    rc = {"svg.hashsalt": "pytest-tune-ci", "path.simplify": False}
    with plt.rc_context(rc):
        fig, axes = plt.subplots(
            len(series),
            1,
            figsize=(PANEL_WIDTH_IN, PANEL_HEIGHT_IN * len(series)),
            squeeze=False,
        )
        try:
            for ax, s in zip(axes[:, 0], series, strict=True):
                _panel(ax, runs, s)
            fig.suptitle(title)
            fig.tight_layout()
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
    ax.set_xticks(runs)
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
