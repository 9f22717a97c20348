"""Paired comparisons of two arms of a study: the per-seed difference, its mean,
standard error and a Student-t confidence interval, and a verdict against a margin.

Arms of a study are paired by seed: the same seed gives both arms the same data order
and, where the design allows, the same initial weights. The difference of the paired
results cancels what the seeds share, so it resolves far smaller effects than two
independent means with their standard deviations would ("within one std" compares
spreads, not the effect).

The rule every study reads its claims by: arm A *matches* B within a margin ``m`` when
the whole interval of (A − B) lies above ``−m``; A *beats* B when it lies above 0;
A is *worse* when it lies below ``−m``; otherwise the seeds cannot tell.

Example::

    >>> from experiments.stats import paired
    >>> d = paired([0.95, 0.94, 0.96, 0.95, 0.97], [0.94, 0.94, 0.95, 0.94, 0.95])
    >>> print(d.format(scale=100))
    +1.0 [+0.1, +1.9]
    >>> d.verdict(margin=0.005)
    'better'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

VERDICTS = ("better", "matches", "worse", "unresolved")


@dataclass(frozen=True)
class Paired:
    """The mean of the paired differences (A − B) over ``n`` seeds, its standard error
    and its ``confidence`` interval ``[lo, hi]`` (Student t with n − 1 degrees of
    freedom; unbounded for a single seed)."""

    n: int
    mean: float
    se: float
    lo: float
    hi: float
    confidence: float = 0.95

    def verdict(self, margin: float) -> str:
        """``better`` (interval above 0), ``matches`` (above ``-margin``), ``worse``
        (below ``-margin``) or ``unresolved`` (the interval straddles ``-margin``)."""
        if margin < 0:
            raise ValueError(f"Paired.verdict: margin must be >= 0, got {margin}")
        if self.lo > 0:
            return "better"
        if self.lo > -margin:
            return "matches"
        if self.hi < -margin:
            return "worse"
        return "unresolved"

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        """``"+1.0 [+0.3, +1.7]"``: the mean difference and its interval, times ``scale``
        (100 turns accuracies into points); ``"+1.0 [1 seed: no interval]"`` for one
        pair."""

        def f(x: float) -> str:
            return f"{scale * x:+.{digits}f}"

        if math.isinf(self.lo) or math.isinf(self.hi):
            return f"{f(self.mean)} [{self.n} seed: no interval]"
        return f"{f(self.mean)} [{f(self.lo)}, {f(self.hi)}]"

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "mean": self.mean,
            "se": self.se,
            "lo": self.lo,
            "hi": self.hi,
            "confidence": self.confidence,
        }


def paired(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Paired:
    """The paired difference ``a[i] - b[i]`` over seeds ``i`` (see the module docstring).

    Args:
      a, b: one result per seed each, in the same seed order.
      confidence: of the two-sided interval, in (0, 1).

    Returns:
      A :class:`Paired`.
    """
    import numpy as np
    from scipy.special import stdtrit  # t.ppf's own kernel, without scipy.stats' import

    a_ = np.asarray(a, np.float64).ravel()
    b_ = np.asarray(b, np.float64).ravel()
    if a_.shape != b_.shape or a_.size == 0:
        raise ValueError(
            f"paired: needs one value per seed in each arm, got {a_.size} and {b_.size}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"paired: confidence must be in (0, 1), got {confidence}")
    if not (np.isfinite(a_).all() and np.isfinite(b_).all()):
        raise ValueError("paired: the results hold NaN or inf")
    d = a_ - b_
    n, mean = d.size, float(d.mean())
    if n == 1:
        return Paired(1, mean, math.inf, -math.inf, math.inf, confidence)
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * se
    return Paired(n, mean, se, mean - half, mean + half, confidence)
