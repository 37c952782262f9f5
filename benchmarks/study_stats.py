"""Statistics of the studies over seeds: mean ± sample std with a 95% t interval, and the
paired comparison of two methods (same seed = same training examples and init seed).

Intervals and tests use Student's t with n − 1 degrees of freedom: with 3–5 seeds the
normal approximation would be far too narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and the t confidence interval of n values (std and interval are
    NaN for one value: nothing can be said about the spread)."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def summarize(values: list[float], confidence: float = CONFIDENCE) -> Summary:
    if not values:
        raise ValueError("summarize: expected at least one value")
    m = mean(values)
    if len(values) == 1:
        return Summary(1, m, math.nan, math.nan, math.nan)
    sd = stdev(values)
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return Summary(len(values), m, sd, m - half, m + half)


@dataclass(frozen=True)
class Paired:
    """a − b over matched pairs: the differences' summary and the paired t-test p-value
    (NaN with fewer than 2 pairs, or when every difference is the same: the t statistic
    is undefined, and no claim is made)."""

    diff: Summary
    p: float

    @property
    def significant(self) -> bool:
        return self.p < ALPHA  # NaN compares False: no test, no claim


def paired(a: dict, b: dict) -> Paired | None:
    """a − b over the keys (seeds, or (task, seed) pairs) both have; None without any."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    diffs = [a[k] - b[k] for k in keys]
    p = math.nan
    if len(keys) > 1 and stdev(diffs) > 1e-12:  # identical differences (up to rounding): no t
        p = float(stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys]).pvalue)
    return Paired(summarize(diffs), p)


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of one family of tests, in the given order (NaN
    stays NaN and is not counted in the family): adjusted p <= 0.05 keeps the chance of
    any false positive in the family under 5%, where the raw p-values only bound each."""
    order = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    out = [math.nan] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def fmt_summary(s: Summary, scale: float = 100.0) -> str:
    """'72.4 ± 1.3 [70.1, 74.7]' (points); one value has no spread: '72.4 (1 seed)'."""
    if s.n == 1:
        return f"{scale * s.mean:.1f} (1 seed)"
    return f"{scale * s.mean:.1f} ± {scale * s.std:.1f} [{scale * s.low:.1f}, {scale * s.high:.1f}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_paired(d: Paired, scale: float = 100.0) -> list[str]:
    """Cells: mean difference, 95% CI, p-value, significant at 0.05, pairs."""
    s = d.diff
    ci = "n/a" if s.n == 1 else f"[{scale * s.low:+.1f}, {scale * s.high:+.1f}]"
    verdict = "n/a" if math.isnan(d.p) else ("yes" if d.significant else "no")
    return [f"{scale * s.mean:+.1f}", ci, fmt_p(d.p), verdict, str(s.n)]
