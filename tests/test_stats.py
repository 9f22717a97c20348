"""The studies' paired statistics (experiments/stats.py), by value."""

import doctest
import math

import numpy as np
import pytest

from experiments import stats

# five seeds' accuracies of two arms, and Student t's 97.5% quantile at 4 degrees of
# freedom (tables: 2.776445105...)
A = [0.912, 0.934, 0.921, 0.905, 0.940]
B = [0.915, 0.926, 0.910, 0.909, 0.931]
T_975_DF4 = 2.7764451051977987


def test_paired_equals_a_numpy_computation():
    d = np.array(A) - np.array(B)
    se = d.std(ddof=1) / np.sqrt(5)
    got = stats.paired(A, B)
    assert got.n == 5
    np.testing.assert_allclose(got.mean, d.mean(), rtol=1e-12)
    np.testing.assert_allclose(got.se, se, rtol=1e-12)
    np.testing.assert_allclose([got.lo, got.hi], d.mean() + np.array([-1, 1]) * T_975_DF4 * se)
    assert got.format(scale=100) == "+0.4 [-0.5, +1.3]"


def test_pairing_resolves_what_two_spreads_cannot():
    # a steady +0.5-point lead under a 1.6-point spread between seeds
    base = np.array([0.90, 0.92, 0.94, 0.91, 0.93])
    lead = base + np.array([0.004, 0.006, 0.005, 0.005, 0.005])
    assert stats.paired(lead, base).verdict(margin=0.005) == "better"
    assert base.std(ddof=1) > 3 * 0.005  # "within one std" would call it a tie


@pytest.mark.parametrize(
    ("lo", "hi", "verdict"),
    [
        (0.001, 0.02, "better"),
        (-0.004, 0.01, "matches"),
        (-0.02, -0.006, "worse"),
        (-0.02, 0.01, "unresolved"),
        (-0.006, -0.001, "unresolved"),  # may be just past the margin
    ],
)
def test_verdicts_against_a_margin(lo, hi, verdict):
    p = stats.Paired(5, (lo + hi) / 2, 0.0, lo, hi)
    assert p.verdict(margin=0.005) == verdict


def test_one_seed_has_an_unbounded_interval():
    p = stats.paired([0.9], [0.8])
    assert math.isinf(p.lo) and math.isinf(p.hi) and p.verdict(0.005) == "unresolved"
    assert p.format(100) == "+10.0 [1 seed: no interval]"


@pytest.mark.parametrize(
    ("a", "b", "kw", "match"),
    [
        ([0.1, 0.2], [0.1], {}, "one value per seed"),
        ([], [], {}, "one value per seed"),
        ([0.1, np.nan], [0.1, 0.2], {}, "NaN"),
        ([0.1, 0.2], [0.1, 0.2], {"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_input_names_the_problem(a, b, kw, match):
    with pytest.raises(ValueError, match=match):
        stats.paired(a, b, **kw)


def test_docstring_example():
    assert doctest.testmod(stats).failed == 0
