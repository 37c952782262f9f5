"""The study's statistics against scipy and by hand, on small arrays."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
stats = pytest.importorskip("scipy.stats")
import study_stats  # noqa: E402


def test_summary_is_mean_sample_std_and_the_t_interval():
    values = [0.61, 0.70, 0.64, 0.58]
    s = study_stats.summarize(values)
    # by hand: t quantile with n - 1 = 3 degrees of freedom times the standard error
    sd = np.std(values, ddof=1)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3}; sqrt(4) = 2
    assert s.n == 4 and s.mean == pytest.approx(np.mean(values))
    assert s.std == pytest.approx(sd)
    assert (s.low, s.high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (s.low, s.high) == pytest.approx((low, high))


def test_one_value_has_no_spread():
    s = study_stats.summarize([0.5])
    assert s.mean == 0.5 and math.isnan(s.std) and math.isnan(s.low) and math.isnan(s.high)
    assert study_stats.fmt_summary(s) == "50.0 (1 seed)"
    with pytest.raises(ValueError, match="at least one value"):
        study_stats.summarize([])


def test_paired_difference_matches_scipy_ttest_rel_on_common_keys():
    a = {"0": 0.70, "1": 0.75, "2": 0.66, "3": 0.90}
    b = {"0": 0.60, "1": 0.71, "2": 0.65, "9": 0.10}  # seed 3 / 9: unpaired, left out
    d = study_stats.paired(a, b)
    diffs = [0.10, 0.04, 0.01]
    assert d.diff.n == 3 and d.diff.mean == pytest.approx(np.mean(diffs))
    expected = stats.ttest_rel([0.70, 0.75, 0.66], [0.60, 0.71, 0.65])
    assert d.p == pytest.approx(expected.pvalue)
    # by hand: t = mean / (sd / sqrt(n)), two-sided p from t with 2 degrees of freedom
    t = np.mean(diffs) / (np.std(diffs, ddof=1) / math.sqrt(3))
    assert d.p == pytest.approx(2 * stats.t.sf(abs(t), 2))
    assert d.significant == (d.p < 0.05)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (d.diff.low, d.diff.high) == pytest.approx((low, high))


def test_significance_follows_the_p_value():
    big = study_stats.paired({"0": 0.9, "1": 0.91, "2": 0.92}, {"0": 0.5, "1": 0.52, "2": 0.5})
    assert big.p < 0.05 and big.significant
    cells = study_stats.fmt_paired(big)
    assert cells[0] == "+40.3" and cells[3] == "yes" and cells[4] == "3"
    noise = study_stats.paired({"0": 0.6, "1": 0.5, "2": 0.7}, {"0": 0.55, "1": 0.6, "2": 0.6})
    assert noise.p > 0.05 and not noise.significant
    assert study_stats.fmt_paired(noise)[3] == "no"


def test_no_test_without_two_distinct_differences():
    one = study_stats.paired({"0": 0.7}, {"0": 0.6})
    assert math.isnan(one.p) and not one.significant
    assert study_stats.fmt_paired(one) == ["+10.0", "n/a", "n/a", "n/a", "1"]
    same = study_stats.paired({"0": 0.7, "1": 0.8}, {"0": 0.6, "1": 0.7})  # sd of diffs = 0
    assert math.isnan(same.p) and not same.significant
    assert study_stats.paired({"0": 0.7}, {"1": 0.6}) is None


def test_holm_adjusts_within_the_family_and_keeps_order():
    """Holm on (0.01, nan, 0.04, 0.03): sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06,
    0.04 -> made monotone 0.03, 0.06, 0.06; NaN stays out of the family."""
    adjusted = study_stats.holm([0.01, math.nan, 0.04, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.06) and adjusted[3] == pytest.approx(0.06)
    assert study_stats.holm([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    assert study_stats.holm([]) == []
