"""Whether two groups of seeds differ: Welch's t-test, and how many seeds a difference needs.

A sweep has 2 to 5 seeds per setting. A bootstrap over so few seeds has too few distinct
resamples to give an interval (3 seeds: 10), so the comparison is Welch's t-test
(scipy.stats.ttest_ind with equal_var=False), which does not assume that two optimizers
spread equally across seeds.
"""

import math
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.05  # two-sided; the interval is the 95% one
POWER = 0.8  # the usual target when asking how many seeds a difference needs


@dataclass
class Difference:
    mean: float  # mean of a minus mean of b
    low: float  # the 95% confidence interval of that difference
    high: float
    p: float  # two-sided p-value of "no difference"
    seeds_needed: int | None  # per group, to resolve a difference this size at these spreads; None: no spread

    @property
    def resolved(self) -> bool:
        return self.p < LEVEL


def seeds_needed(difference: float, std_a: float, std_b: float) -> int | None:
    """Seeds per group for Welch's test at the 5% level to find `difference` with 80% power at
    these spreads: the smallest n with t(1 - LEVEL/2, df) + t(POWER, df) <= |difference| /
    sqrt((std_a^2 + std_b^2) / n), df by Welch-Satterthwaite for n seeds each. For equal spreads
    this is Cohen's table (a difference of one std: 17 per group). None: nothing to resolve (no
    difference, or no spread)."""
    variance = std_a**2 + std_b**2
    if variance == 0 or difference == 0:
        return None
    df_per_seed = variance**2 / (std_a**4 + std_b**4)  # Welch-Satterthwaite's df is (n - 1) times this

    def resolves(n: int) -> bool:
        df = (n - 1) * df_per_seed
        return stats.t.ppf(1 - LEVEL / 2, df) + stats.t.ppf(POWER, df) <= abs(difference) / math.sqrt(variance / n)

    # t's quantiles exceed the normal's, so no n below the normal approximation's count resolves the
    # difference: the search starts there (one below, against rounding) and takes a few steps, where a
    # scan from 2 took up to 100,000 (35 s of every sweep summary whose difference was small)
    normal = (stats.norm.ppf(1 - LEVEL / 2) + stats.norm.ppf(POWER)) ** 2 * variance / difference**2
    n = max(2, math.ceil(normal) - 1)
    while not resolves(n):
        n += 1
    return n


def compare(a: list[float], b: list[float]) -> Difference:
    """Welch's t-test of two groups' values (at least two each)."""
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(1 - LEVEL)
    mean = sum(a) / len(a) - sum(b) / len(b)
    std_a, std_b = (float(stats.tstd(values)) for values in (a, b))
    return Difference(mean, float(interval.low), float(interval.high), float(result.pvalue), seeds_needed(mean, std_a, std_b))
