"""Statistics of N observations: spread, threshold policies, false-alarm rates.

Pure functions on lists of floats, standard library only. A *worst op* says
which side of a threshold fails: ``min`` is a lower bound (a run below it
fails), ``max`` an upper bound (a run above it fails).

The false-alarm estimates (per CI run, for a healthy run like the observed
ones):

- distribution-free, for a value derived from the runs (a proposal): under
  exchangeability the next run is worse than all N observed ones with
  probability 1/(N+1), so a value that fails none of them fails the next run
  with probability at most 1/(N+1); one that fails k of them, (k+1)/(N+1).
- distribution-free, for a value fixed before the runs (the current one): k of
  the N runs fail it; the rule of succession gives (k+1)/(N+2), never 0 because
  N healthy passes do not prove a zero rate.
- normal fit: the tail of ``NormalDist(mean, stdev)`` beyond the value; only as
  good as the normal assumption, and undefined for fewer than 2 runs or zero
  spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING
from decimal import ROUND_FLOOR
from decimal import Decimal
from decimal import localcontext
from typing import Literal

from .stages import Display
from .stages import Worst


Number = int | float
PolicyKind = Literal["worst", "slack", "predict"]

ROBUST_Z_MAX = 3.5
OUTLIER_GAP_FRACTION = 0.2
MAD_TO_SIGMA = 1.4826  # MAD of a normal sample × this estimates its sigma


# -- spread -----------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    n: int
    median: float | None
    mean: float | None
    stdev: float | None  # sample stdev; None below 2 observations
    cv: float | None  # stdev / |mean|, a fraction
    min: float | None
    max: float | None


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, None, None, None, None, None, None)
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else None
    cv = None if stdev is None or mean == 0 else stdev / abs(mean)
    return Summary(
        n=len(values),
        median=float(statistics.median(values)),
        mean=mean,
        stdev=stdev,
        cv=cv,
        min=float(min(values)),
        max=float(max(values)),
    )


def worst_of(values: Sequence[float], worst: Worst) -> float | None:
    if not values:
        return None
    return float(min(values) if worst == "min" else max(values))


def fails(value: float, threshold: float, worst: Worst) -> bool:
    """Whether an observed ``value`` fails ``threshold`` (equality passes)."""
    return value < threshold if worst == "min" else value > threshold


def count_failing(values: Sequence[float], threshold: float, worst: Worst) -> int:
    return sum(1 for v in values if fails(v, threshold, worst))


def outliers(
    values: Sequence[float],
    *,
    resolution: float = 0.0,
    z_max: float = ROBUST_Z_MAX,
    gap_fraction: float = OUTLIER_GAP_FRACTION,
) -> list[int]:
    """Indices of values that stand apart from the rest.

    A value is an outlier when its robust z, |v - median| / (1.4826·MAD), is
    above ``z_max`` *and* the gap to its nearest neighbour is at least
    ``gap_fraction`` of the median of the other values and larger than
    ``resolution`` (the display resolution: a gap the report cannot show is
    not one). Needs 3 values; with a zero MAD any value off the median has an
    infinite z and only the gap decides.
    """
    if len(values) < 3:
        return []
    med = statistics.median(values)
    mad = statistics.median([abs(v - med) for v in values])
    found: list[int] = []
    for i, v in enumerate(values):
        dev = abs(v - med)
        # With a zero MAD only the gap can tell a lone value from the rest.
        z = dev / (MAD_TO_SIGMA * mad) if mad > 0 else math.inf if dev else 0.0
        if z <= z_max:
            continue
        rest = [w for j, w in enumerate(values) if j != i]
        gap = min(abs(v - w) for w in rest)
        if gap >= gap_fraction * abs(statistics.median(rest)) and gap > resolution:
            found.append(i)
    return found


# -- the t distribution -----------------------------------------------------


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        # even step
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        # odd step
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
        + a * math.log(x)
        + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast on this side of the mean; use symmetry else.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The quantile t_{p, df}: the t with ``t_cdf(t, df) == p`` (by bisection)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2.0


# -- policies ---------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How a proposal is derived from the observations.

    ``worst``: the worst observed value. ``slack:P``: the worst value moved P
    percent in the loosening direction. ``predict:A``: a one-sided prediction
    bound for the next run at false-alarm rate A (a fraction).
    """

    kind: PolicyKind
    param: float | None = None

    def __str__(self) -> str:
        if self.param is None:
            return self.kind
        return f"{self.kind}:{self.param:g}"


WORST = Policy("worst")


def parse_policy(text: str) -> Policy:
    """``worst``, ``slack:10`` (or ``slack:10%``), ``predict:0.01`` (or ``1%``).

    Raises ValueError with what was expected; callers add the file and key.
    """
    name, sep, arg = str(text).strip().partition(":")
    name = name.strip().lower()
    if name == "worst" and not sep:
        return WORST
    if name not in ("slack", "predict") or not arg.strip():
        raise ValueError(
            f"expected 'worst', 'slack:PERCENT' or 'predict:RATE', got {text!r}"
        )
    arg = arg.strip()
    percent = arg.endswith("%")
    try:
        value = float(arg.rstrip("%"))
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {arg!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {arg!r}")
    if name == "slack":
        if value < 0:
            raise ValueError(f"slack: expected a percentage >= 0, got {arg!r}")
        return Policy("slack", value)
    rate = value / 100.0 if percent else value
    if not 0.0 < rate < 1.0:
        raise ValueError(
            f"predict: expected a false-alarm rate in (0, 1), e.g. 0.01 or 1%, "
            f"got {arg!r}"
        )
    return Policy("predict", rate)


def round_away(
    value: float, worst: Worst, display: Display, *, integer: bool = False
) -> Number:
    """Round ``value`` in display units away from the observations.

    Floor for a lower bound, ceiling for an upper one, at ``display.digits``
    decimals of ``value × display.scale``, so the written value never excludes
    the value it was rounded from. The arithmetic is decimal on the shortest
    repr, so the result's repr is short (0.5612, not 0.5612000000000001).
    ``integer`` rounds the raw value to a whole number too and returns an int.
    """
    rounding = ROUND_FLOOR if worst == "min" else ROUND_CEILING
    with localcontext() as ctx:
        ctx.prec = 40
        ctx.rounding = rounding
        scale = Decimal(repr(display.scale))
        quantum = Decimal(1).scaleb(-display.digits)
        shown = (Decimal(repr(float(value))) * scale).quantize(
            quantum, rounding=rounding
        )
        raw = shown / scale
        if integer:
            return int(raw.to_integral_value(rounding=rounding))
        result = float(raw)
    # A scale that is not a power of ten can leave a float one ulp inside.
    if fails(value, result, worst):
        return float(value)
    return result


def loosen(value: float, percent: float, worst: Worst) -> float:
    """``value`` moved ``percent`` percent in the loosening direction.

    Decimal on the shortest reprs: 12 + 10% is 13.2, not 13.200000000000001,
    which the rounding would then carry up to 13.201.
    """
    with localcontext() as ctx:
        ctx.prec = 40
        base = Decimal(repr(float(value)))
        step = abs(base) * Decimal(repr(float(percent))) / 100
        return float(base - step if worst == "min" else base + step)


def prediction_bound(values: Sequence[float], rate: float, worst: Worst) -> float:
    """mean ∓ t_{1-rate, N-1} · s · sqrt(1 + 1/N): the next run's one-sided bound.

    Needs two observations; with zero spread it is the mean itself.
    """
    n = len(values)
    if n < 2:
        raise ValueError("a prediction bound needs at least 2 observations")
    mean = statistics.fmean(values)
    s = statistics.stdev(values)
    half = t_ppf(1.0 - rate, n - 1) * s * math.sqrt(1.0 + 1.0 / n)
    return mean - half if worst == "min" else mean + half


def propose(
    values: Sequence[float],
    worst: Worst,
    policy: Policy,
    display: Display,
    *,
    integer: bool = False,
) -> Number | None:
    """The threshold ``policy`` proposes for ``values``; None without values.

    Every policy is at least as loose as the worst observation, so the value
    never fails an observed run. ``predict`` on one run falls back to worst.
    """
    w = worst_of(values, worst)
    if w is None:
        return None
    bound = w
    if policy.kind == "slack":
        bound = loosen(w, policy.param or 0.0, worst)
    elif policy.kind == "predict" and len(values) >= 2:
        pb = prediction_bound(values, policy.param or 0.05, worst)
        bound = min(pb, w) if worst == "min" else max(pb, w)
    return round_away(bound, worst, display, integer=integer)


# -- false-alarm rates ------------------------------------------------------


def rate_derived(values: Sequence[float], threshold: float, worst: Worst) -> float:
    """Distribution-free rate of a value derived from ``values``: (k+1)/(N+1)."""
    k = count_failing(values, threshold, worst)
    return min(1.0, (k + 1) / (len(values) + 1))


def rate_fixed(values: Sequence[float], threshold: float, worst: Worst) -> float:
    """Distribution-free rate of a value fixed before the runs: (k+1)/(N+2)."""
    k = count_failing(values, threshold, worst)
    return (k + 1) / (len(values) + 2)


def rate_normal(
    values: Sequence[float], threshold: float, worst: Worst
) -> float | None:
    """The tail of a normal fit beyond ``threshold``; None when undefined."""
    if len(values) < 2:
        return None
    s = statistics.stdev(values)
    if not s > 0:
        return None
    dist = statistics.NormalDist(statistics.fmean(values), s)
    below = dist.cdf(threshold)
    return below if worst == "min" else 1.0 - below


def enforced(value: float, factor: float) -> float:
    """The threshold CI really enforces when the test scales the constant."""
    return value * factor


# -- direction --------------------------------------------------------------


def direction(current: Number | None, new: Number | None, worst: Worst) -> str:
    """tightens | loosens | equal | unknown (current or new is missing)."""
    if current is None or new is None:
        return "unknown"
    if abs(current - new) < 1e-12:
        return "equal"
    tighter = new > current if worst == "min" else new < current
    return "tightens" if tighter else "loosens"


def delta_pct(old: Number | None, new: Number | None) -> float | None:
    """(new - old) / |old| × 100 to one decimal; None when old is 0 or missing."""
    if old is None or new is None or old == 0:
        return None
    return round((new - old) / abs(old) * 100.0, 1)


__all__ = [
    "WORST",
    "Policy",
    "Summary",
    "betainc",
    "count_failing",
    "delta_pct",
    "direction",
    "enforced",
    "fails",
    "loosen",
    "outliers",
    "parse_policy",
    "prediction_bound",
    "propose",
    "rate_derived",
    "rate_fixed",
    "rate_normal",
    "round_away",
    "summarize",
    "t_cdf",
    "t_ppf",
    "worst_of",
]
