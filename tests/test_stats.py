from __future__ import annotations

import math
import statistics

import pytest

from pytest_tune_ci import stats
from pytest_tune_ci.stages import Display


ACC = Display("Acc (%)", scale=100, digits=2)
WER = Display("Corpus WER (%)", scale=100, digits=2)
SPEED = Display("Throughput (req/s)", scale=1, digits=3)
COUNT = Display("Samples >50% WER", scale=1, digits=0)


# -- rounding away from the observations ------------------------------------


@pytest.mark.parametrize(
    ("value", "worst", "display", "expected"),
    [
        (0.56127, "min", ACC, 0.5612),  # 56.127% floors to 56.12%
        (0.56127, "max", ACC, 0.5613),
        (0.0238764, "max", WER, 0.0239),  # 2.38764% ceils to 2.39%
        (0.0238764, "min", WER, 0.0238),
        (1.29871, "min", SPEED, 1.298),
        (10.3201, "max", SPEED, 10.321),
        (6.6, "max", SPEED, 6.6),  # exactly representable: no move
        (0.5612, "min", ACC, 0.5612),  # on the grid: stays
        (-1.2345, "min", SPEED, -1.235),  # floor of a negative goes down
        (2.4, "max", COUNT, 3.0),
        (2.4, "min", COUNT, 2.0),
    ],
)
def test_round_away(
    value: float, worst: str, display: Display, expected: float
) -> None:
    got = stats.round_away(value, worst, display)  # type: ignore[arg-type]
    assert got == expected
    assert repr(got) == repr(expected)  # no float noise
    # never excludes the value it came from
    assert not stats.fails(value, got, worst)  # type: ignore[arg-type]


def test_round_away_no_float_noise() -> None:
    # 6.6000000000000005 is what naive ceil(x*1000)/1000 arithmetic gives.
    assert repr(stats.round_away(6.6000000000000005, "max", SPEED)) == "6.601"
    assert repr(stats.round_away(6.59999, "max", SPEED)) == "6.6"
    assert repr(stats.round_away(0.1 + 0.2, "max", ACC)) == "0.3001"
    assert repr(stats.round_away(0.07, "min", ACC)) == "0.07"


def test_round_away_integers_stay_integers() -> None:
    got = stats.round_away(3.0, "max", COUNT, integer=True)
    assert got == 3 and isinstance(got, int)
    got = stats.round_away(3.2, "max", COUNT, integer=True)
    assert got == 4 and isinstance(got, int)
    got = stats.round_away(3.8, "min", COUNT, integer=True)
    assert got == 3 and isinstance(got, int)
    # integer on a metric shown with decimals still rounds away to a whole
    got = stats.round_away(3.2, "min", SPEED, integer=True)
    assert got == 3 and isinstance(got, int)


def test_round_away_odd_scale_never_excludes() -> None:
    display = Display("x", scale=3, digits=2)
    for value in (0.1234567, 0.3333333, 1.0 / 3.0, 2.0 / 7.0):
        for worst in ("min", "max"):
            got = stats.round_away(value, worst, display)  # type: ignore[arg-type]
            assert not stats.fails(value, got, worst)  # type: ignore[arg-type]


# -- policies ---------------------------------------------------------------


def test_parse_policy() -> None:
    assert stats.parse_policy("worst") == stats.WORST
    assert stats.parse_policy("slack:10") == stats.Policy("slack", 10.0)
    assert stats.parse_policy("slack:2.5%") == stats.Policy("slack", 2.5)
    assert stats.parse_policy("predict:0.01") == stats.Policy("predict", 0.01)
    assert stats.parse_policy("predict:1%") == stats.Policy("predict", 0.01)
    assert str(stats.parse_policy("predict:0.01")) == "predict:0.01"
    for bad in ("best", "slack", "slack:-1", "predict:0", "predict:x", "worst:1"):
        with pytest.raises(ValueError):
            stats.parse_policy(bad)


def test_worst_policy_per_op() -> None:
    acc = [0.5798, 0.56127, 0.5701]
    assert stats.propose(acc, "min", stats.WORST, ACC) == 0.5612
    wer = [0.0201, 0.0238764, 0.0199]
    assert stats.propose(wer, "max", stats.WORST, WER) == 0.0239
    qps = [1.3187, 1.2934, 1.3051]
    assert stats.propose(qps, "min", stats.WORST, SPEED) == 1.293
    lat = [10.1234, 10.4561, 10.2]
    assert stats.propose(lat, "max", stats.WORST, SPEED) == 10.457
    counts = [1.0, 3.0, 2.0]
    got = stats.propose(counts, "max", stats.WORST, COUNT, integer=True)
    assert got == 3 and isinstance(got, int)
    assert stats.propose([], "min", stats.WORST, SPEED) is None


def test_slack_policy_loosens_then_rounds() -> None:
    qps = [1.3, 1.2, 1.25]
    # 1.2 - 10% = 1.08 (float 1.08), floored at 3 digits
    assert stats.propose(qps, "min", stats.Policy("slack", 10), SPEED) == 1.08
    # In float arithmetic 1.1 + 10% is 1.2100000000000002 and 0.7 - 10% is
    # 0.6299999999999999; rounding those away would give 1.211 and 0.629.
    assert repr(stats.propose([1.1], "max", stats.Policy("slack", 10), SPEED)) == (
        "1.21"
    )
    assert repr(stats.propose([0.7], "min", stats.Policy("slack", 10), SPEED)) == (
        "0.63"
    )
    lat = [10.0, 12.0]
    assert stats.propose(lat, "max", stats.Policy("slack", 0), SPEED) == 12.0
    acc = [0.5612, 0.57]
    # 56.12% - 5% = 53.314% floored at 2 digits
    assert stats.propose(acc, "min", stats.Policy("slack", 5), ACC) == 0.5331
    assert stats.loosen(-2.0, 50, "min") == -3.0
    assert stats.loosen(-2.0, 50, "max") == -1.0


def test_predict_policy_matches_the_formula() -> None:
    values = [1.30, 1.28, 1.33, 1.31, 1.29]
    n = len(values)
    mean, s = statistics.fmean(values), statistics.stdev(values)
    t = 2.132  # t_{0.95, 4}, from a table
    expected_min = mean - t * s * math.sqrt(1 + 1 / n)
    bound = stats.prediction_bound(values, 0.05, "min")
    assert bound == pytest.approx(expected_min, abs=2e-4)
    got = stats.propose(values, "min", stats.Policy("predict", 0.05), SPEED)
    assert got == math.floor(bound * 1000) / 1000
    expected_max = mean + t * s * math.sqrt(1 + 1 / n)
    assert stats.prediction_bound(values, 0.05, "max") == pytest.approx(
        expected_max, abs=2e-4
    )


def test_predict_is_never_tighter_than_worst() -> None:
    # Two clusters: the t bound at 40% sits inside the worst observation.
    values = [1.0, 1.0, 1.0, 1.0, 0.5]
    assert stats.prediction_bound(values, 0.4, "min") > 0.5
    assert stats.propose(values, "min", stats.Policy("predict", 0.4), SPEED) == 0.5
    # one observation: falls back to worst
    assert stats.propose([2.5], "max", stats.Policy("predict", 0.01), SPEED) == 2.5


# -- the t distribution -----------------------------------------------------

# Tabulated one-sided quantiles t_{p, df} (3 decimals).
T_TABLE = [
    (0.95, 1, 6.314),
    (0.975, 1, 12.706),
    (0.99, 1, 31.821),
    (0.95, 2, 2.920),
    (0.975, 2, 4.303),
    (0.99, 2, 6.965),
    (0.95, 4, 2.132),
    (0.975, 4, 2.776),
    (0.99, 4, 3.747),
    (0.95, 9, 1.833),
    (0.975, 9, 2.262),
    (0.99, 9, 2.821),
    (0.95, 19, 1.729),
    (0.975, 19, 2.093),
    (0.99, 19, 2.539),
    (0.95, 29, 1.699),
    (0.975, 29, 2.045),
    (0.99, 29, 2.462),
]


@pytest.mark.parametrize(("p", "df", "expected"), T_TABLE)
def test_t_quantiles_match_the_table(p: float, df: int, expected: float) -> None:
    assert round(stats.t_ppf(p, df), 3) == expected
    assert stats.t_ppf(1 - p, df) == pytest.approx(-stats.t_ppf(p, df))
    assert stats.t_cdf(stats.t_ppf(p, df), df) == pytest.approx(p, abs=1e-10)


def test_t_cdf_against_closed_forms() -> None:
    # df=1 is Cauchy; df=2 has cdf 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi)
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)))
    # large df tends to the normal
    z = statistics.NormalDist().inv_cdf(0.99)
    assert stats.t_ppf(0.99, 100000) == pytest.approx(z, abs=1e-3)


# -- false-alarm rates ------------------------------------------------------


def test_rate_of_the_worst_value_is_one_over_n_plus_one() -> None:
    values = [1.3, 1.28, 1.33, 1.31]
    worst = stats.worst_of(values, "min")
    assert worst == 1.28
    assert stats.rate_derived(values, worst, "min") == pytest.approx(1 / 5)
    proposed = stats.propose(values, "min", stats.WORST, SPEED)
    assert stats.rate_derived(values, float(proposed or 0), "min") == 1 / 5
    assert stats.rate_derived(values, 1.315, "min") == pytest.approx(4 / 5)


def test_rate_of_a_fixed_value_uses_the_rule_of_succession() -> None:
    values = [1.3, 1.28, 1.33, 1.31, 1.29]
    assert stats.count_failing(values, 1.30, "min") == 2  # 1.28, 1.29
    assert stats.rate_fixed(values, 1.30, "min") == pytest.approx(3 / 7)
    assert stats.rate_fixed(values, 1.0, "min") == pytest.approx(1 / 7)
    assert stats.count_failing(values, 1.3, "max") == 2  # 1.33, 1.31


def test_rate_normal_fit() -> None:
    values = [1.0, 2.0, 3.0]
    dist = statistics.NormalDist(2.0, 1.0)
    assert stats.rate_normal(values, 1.5, "min") == pytest.approx(dist.cdf(1.5))
    assert stats.rate_normal(values, 2.5, "max") == pytest.approx(1 - dist.cdf(2.5))
    assert stats.rate_normal([1.0], 0.5, "min") is None
    assert stats.rate_normal([1.0, 1.0], 0.5, "min") is None


def test_ci_slack_changes_the_rate() -> None:
    # The test asserts qps >= constant × 0.875: a constant above some runs
    # still passes them all once the slack is applied.
    values = [1.30, 1.28, 1.33, 1.31, 1.29]
    constant = 1.32
    assert stats.count_failing(values, constant, "min") == 4
    enforced = stats.enforced(constant, 0.875)
    assert enforced == pytest.approx(1.155)
    assert stats.count_failing(values, enforced, "min") == 0
    assert stats.rate_fixed(values, enforced, "min") == pytest.approx(1 / 7)
    slack_rate = stats.rate_normal(values, enforced, "min")
    plain_rate = stats.rate_normal(values, constant, "min")
    assert slack_rate is not None and plain_rate is not None
    assert slack_rate < 1e-6 < 0.5 < plain_rate
    # WER × 1.25 for an upper bound
    wer = [0.020, 0.025, 0.022]
    assert stats.count_failing(wer, 0.021, "max") == 2
    assert stats.count_failing(wer, stats.enforced(0.021, 1.25), "max") == 0


# -- spread, outliers, direction -------------------------------------------


def test_summarize() -> None:
    s = stats.summarize([1.0, 2.0, 4.0])
    assert (s.n, s.median, s.min, s.max) == (3, 2.0, 1.0, 4.0)
    assert s.mean == pytest.approx(7 / 3)
    assert s.stdev == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    assert s.cv == pytest.approx(s.stdev / s.mean)  # type: ignore[operator]
    one = stats.summarize([5.0])
    assert one.stdev is None and one.cv is None and one.median == 5.0
    assert stats.summarize([]).n == 0


def test_outliers() -> None:
    assert stats.outliers([1.30, 1.31, 1.29, 1.30, 0.60]) == [4]
    # a close neighbour: not a lone value
    assert stats.outliers([1.30, 1.31, 1.29, 0.61, 0.60]) == []
    # gap below the display resolution
    assert stats.outliers([1.0, 1.0, 1.0, 1.0, 1.004], resolution=0.01) == []
    assert stats.outliers([1.0, 1.0, 1.0, 1.0, 1.5], resolution=0.01) == [4]
    # noisy but no lone value
    assert stats.outliers([1.0, 1.2, 0.8, 1.1, 0.9]) == []
    assert stats.outliers([1.0, 5.0]) == []


def test_direction_and_delta() -> None:
    assert stats.direction(1.318, 1.29, "min") == "loosens"
    assert stats.direction(1.29, 1.318, "min") == "tightens"
    assert stats.direction(0.02, 0.019, "max") == "tightens"
    assert stats.direction(0.02, 0.021, "max") == "loosens"
    assert stats.direction(4, 4.0, "max") == "equal"
    assert stats.direction(None, 1.0, "max") == "unknown"
    assert stats.delta_pct(1.318, 1.29) == -2.1
    assert stats.delta_pct(54.416, 52.1) == -4.3
    assert stats.delta_pct(0, 1.0) is None
    assert stats.delta_pct(-2.0, -1.0) == 50.0
