"""The statistics of `lstm compare`: mean and sample standard deviation over seeds, and Welch's
two-sample t-test, with Student's t distribution computed here rather than taken from scipy.

The two-sided p-value of t with ``df`` degrees of freedom is the regularised incomplete beta
function I_x(df/2, 1/2) at x = df / (df + t^2), evaluated by its continued fraction with the
modified Lentz method (Numerical Recipes, 2nd ed., section 6.4). Pure Python: no numpy, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_MAX_ITERATIONS = 10_000  # the fraction needs O(sqrt(max(a, b))) terms: df up to ~1e8
_EPSILON = 1e-15
_TINY = 1e-300  # stands in for a zero denominator in Lentz's method


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean; None for no values."""
    return math.fsum(values) / len(values) if values else None


def sample_sd(values: Sequence[float]) -> float | None:
    """The sample standard deviation (divisor n - 1); None for fewer than two values, where it
    is undefined (not zero)."""
    if len(values) < 2:
        return None
    centre = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - centre) ** 2 for v in values) / (len(values) - 1))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method; converges fast for
    x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),  # the even step
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # the odd step
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPSILON:
            return h
    raise ArithmeticError(f"the incomplete beta fraction did not converge for a={a}, b={b}, "
                          f"x={x}")


def incomplete_beta(a: float, b: float, x: float, complement: float | None = None) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1].
    ``complement`` is 1 - x when the caller knows it more exactly than 1 - x rounds to (x near
    1: the t-test's small t)."""
    y = 1.0 - x if complement is None else complement
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(y))
    # The fraction of I_x(a, b) or, by the symmetry I_x(a, b) = 1 - I_{1-x}(b, a), of the other
    # side: whichever converges quickly.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` > 0 degrees of freedom (not necessarily whole)."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    t2 = t * t
    # x = df / (df + t^2) and 1 - x = t^2 / (df + t^2), each computed without cancellation.
    return min(1.0, incomplete_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2)))


@dataclass
class Welch:
    """Welch's two-sample t-test of ``a`` against ``b`` (difference = mean(a) - mean(b)). When
    the test is undefined, ``t``, ``df`` and ``p`` are None and ``reason`` says why."""

    difference: float | None
    t: float | None = None
    df: float | None = None
    p: float | None = None
    reason: str | None = None

    def to_dict(self, alpha: float) -> dict[str, Any]:
        """The JSON form, with ``significant`` (p < alpha; None without a p-value)."""
        return {**asdict(self), "significant": None if self.p is None else self.p < alpha}


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's t-test (unequal variances), two-sided: t = (mean_a - mean_b) / sqrt(s_a^2/n_a +
    s_b^2/n_b), with the Welch-Satterthwaite degrees of freedom."""
    mean_a, mean_b = mean(a), mean(b)
    difference = None if mean_a is None or mean_b is None else mean_a - mean_b
    if len(a) < 2 or len(b) < 2:
        return Welch(difference, reason=f"needs at least 2 runs on each side (got {len(a)} "
                                         f"and {len(b)})")
    sd_a, sd_b = sample_sd(a), sample_sd(b)
    assert difference is not None and sd_a is not None and sd_b is not None
    var_a, var_b = sd_a * sd_a / len(a), sd_b * sd_b / len(b)  # squared standard errors
    if var_a + var_b == 0.0:
        return Welch(difference, reason="every run on both sides gave the same value: no "
                                        "seed-to-seed variation to test against")
    t = difference / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a * var_a / (len(a) - 1) + var_b * var_b / (len(b) - 1))
    return Welch(difference, t, df, t_two_sided_p(t, df))
