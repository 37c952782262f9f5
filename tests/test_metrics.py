"""pha.data.metrics against sklearn and scipy."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st

from pha.data import metrics
from pha.scoring import format_table, metric_means

labels_and_preds = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
        st.lists(st.integers(-1, 4), min_size=n, max_size=n),  # -1: an unparseable answer
    )
)


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=100, deadline=None)
@given(labels_and_preds)
def test_classification_metrics_match_sklearn(case):
    y, p = case
    assert metrics.accuracy(p, y) == pytest.approx(sklearn.metrics.accuracy_score(y, p))
    classes = sorted((set(y) | set(p)) - {-1})  # an unparsed answer is not a class
    assert metrics.macro_f1(p, y) == pytest.approx(
        sklearn.metrics.f1_score(y, p, average="macro", labels=classes, zero_division=0)
    )
    assert metrics.mcc(p, y) == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p), abs=1e-12)


floats = st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 1))  # rounding makes ties


@settings(max_examples=100, deadline=None)
@given(
    st.integers(2, 50).flatmap(lambda n: st.tuples(*[st.lists(floats, min_size=n, max_size=n)] * 2))
)
def test_correlations_match_scipy(case):
    x, y = np.array(case[0]), np.array(case[1])
    constant = np.ptp(x) == 0 or np.ptp(y) == 0
    want_p = 0.0 if constant else scipy.stats.pearsonr(x, y).statistic
    want_s = 0.0 if constant else scipy.stats.spearmanr(x, y).statistic
    assert metrics.pearson(x, y) == pytest.approx(want_p, abs=1e-9)
    assert metrics.spearman(x, y) == pytest.approx(want_s, abs=1e-9)


def test_rank_averages_ties_like_scipy():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(metrics._rank(x), scipy.stats.rankdata(x))


def test_known_values():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert metrics.mcc([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert metrics.mcc([0, 0, 0], [0, 1, 0]) == 0.0  # undefined (constant prediction) -> 0
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # constant, though x - x.mean() is not exactly 0 in floating point (hypothesis found it)
    assert metrics.pearson([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]) == 0.0
    # one unparsed answer (-1) is one error, not a third class at F1 0
    assert metrics.macro_f1([0, 1, -1, 1], [0, 1, 0, 1]) == pytest.approx((2 / 3 + 1) / 2)
    assert metrics.macro_f1([-1] + [0, 1] * 50, [0] + [0, 1] * 50) > 0.99


def test_compute_and_average():
    per_task = {
        "a": metrics.compute(["accuracy", "macro_f1"], [0, 1, 1], [0, 1, 0]),
        "b": metrics.compute(["pearson"], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
    }
    assert set(per_task["a"]) == {"accuracy", "macro_f1"}
    # task scores: mean of a's metrics, then mean over tasks
    expected = (np.mean(list(per_task["a"].values())) + 1.0) / 2
    assert metrics.average(per_task) == pytest.approx(expected)


def test_errors():
    with pytest.raises(ValueError, match="preds and labels"):
        metrics.accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="at least one"):
        metrics.macro_f1([], [])
    with pytest.raises(ValueError, match="unknown.*valid"):
        metrics.compute(["f2"], [1], [1])
    with pytest.raises(ValueError, match="per_task"):
        metrics.average({})


def test_the_metrics_table_gives_each_metrics_mean_and_the_run_score():
    """The row under the tasks is each metric's mean over them (blank for mcc, which one
    task lacks); the run's score (metrics.average) is printed on its own, not under the
    first column, where it read as mean accuracy."""
    per_task = {
        "a": {"accuracy": 0.9, "macro_f1": 0.8, "mcc": 0.7},
        "b": {"accuracy": 0.6, "macro_f1": 0.4},
    }
    lines = format_table(per_task, metrics.average(per_task)).splitlines()
    assert lines[0].split() == ["task", "accuracy", "macro_f1", "mcc"]
    assert lines[-2].split() == ["average", "75.00", "60.00"]
    assert lines[-1].split() == ["all", "metrics", f"{100 * (0.8 + 0.5) / 2:.2f}"]
    assert metric_means(per_task) == pytest.approx({"accuracy": 0.75, "macro_f1": 0.6})
