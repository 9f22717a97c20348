"""``jaxsparse._rounding.round_mul`` against Python's ``round(a * n)``.

Python multiplies in float64 and rounds half to even; ``round_mul`` must reproduce that
bit for bit for static floats and traced float32 fractions, with a traced int32 count.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsparse._rounding import round_mul

INT32_MAX = 2**31 - 1

# One compiled program for traced (a, n) pairs, reused by every test below.
_traced = jax.jit(jax.vmap(round_mul))


def _py(a: float, n: int) -> int:
    return round(float(a) * int(n))


def _counts(rng: np.random.Generator) -> np.ndarray:
    """Small counts, odd counts, counts around 1e7, 1e8, 1e9 and the int32 maximum."""
    return np.unique(
        np.concatenate(
            [
                np.arange(0, 600),
                np.arange(1, 400, 2) * 7,
                np.arange(10**7 - 50, 10**7 + 50),
                np.arange(10**8 - 10, 10**8 + 10),
                [10**9, 10**9 + 5, 2**30, 2**30 + 1, INT32_MAX - 1, INT32_MAX],
                rng.integers(0, INT32_MAX, 3000, endpoint=True),
            ]
        )
    ).astype(np.int64)


@pytest.mark.parametrize(
    "a", [0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.9, 0.999, 1 / 3, 0.05, 1e-9, 0.123456789, 1.0]
)
def test_static_fraction_traced_count(a):
    ns = _counts(np.random.default_rng(0))
    got = np.asarray(jax.jit(jax.vmap(lambda n: round_mul(a, n)))(jnp.asarray(ns, jnp.int32)))
    want = np.array([_py(a, n) for n in ns])
    np.testing.assert_array_equal(got, want)


def test_static_both_is_python_round():
    for a, n in [(0.1, 5), (0.5, 3), (0.5, 5), (0.2, 12), (0.3, 10**7 + 3), (0.7, INT32_MAX)]:
        assert round_mul(a, n) == round(a * n)
        assert isinstance(round_mul(a, n), int)


def test_known_half_cases():
    # 0.1 * 5 is exactly 0.5 in float64 (slightly above in exact arithmetic): rounds to 0.
    assert _py(0.1, 5) == 0
    assert int(jax.jit(lambda n: round_mul(0.1, n))(jnp.int32(5))) == 0
    # float32(0.1) is above 0.1: float64(f32(0.1)) * 5 = 0.50000000745..., rounds to 1.
    a32 = np.float32(0.1)
    assert _py(a32, 5) == 1
    assert int(_traced(jnp.asarray([a32]), jnp.asarray([5], jnp.int32))[0]) == 1
    # 0.5 * odd n: exact halves, half to even.
    odd = np.arange(1, 2001, 2)
    got = np.asarray(_traced(jnp.full(odd.shape, 0.5, jnp.float32), jnp.asarray(odd, jnp.int32)))
    np.testing.assert_array_equal(got, [n // 2 + (n // 2) % 2 for n in odd])
    np.testing.assert_array_equal(got[:4], [0, 2, 2, 4])  # 0.5, 1.5, 2.5, 3.5


def test_traced_random_pairs():
    rng = np.random.default_rng(1)
    a = rng.random(20000).astype(np.float32)
    a[:500] = (rng.random(500) * 1e-6).astype(np.float32)  # tiny fractions
    a[500:600] = 1.0
    a[600:700] = 0.0
    n = rng.integers(0, INT32_MAX, a.shape, endpoint=True)
    n[:3000] = rng.integers(0, 3000, 3000)
    got = np.asarray(_traced(jnp.asarray(a), jnp.asarray(n, jnp.int32)))
    want = np.array([_py(x, m) for x, m in zip(a, n)])
    np.testing.assert_array_equal(got, want)


def test_traced_near_half_boundaries():
    """Fractions within a few float32 ulps of (q + 0.5) / n, where float32 math fails."""
    rng = np.random.default_rng(2)
    n = rng.integers(1, INT32_MAX, 4000, endpoint=True)
    n[:1000] = rng.integers(1, 200, 1000)
    n[1000:2000] = rng.integers(10**7, 10**8, 1000)
    q = (rng.random(n.shape) * n).astype(np.int64)
    base = ((q + 0.5) / n).astype(np.float32)
    a = np.concatenate([np.nextafter(base, np.float32(d * np.inf)) for d in (-1, 1)] + [base])
    a = np.clip(a, 0, 1).astype(np.float32)
    nn = np.concatenate([n, n, n])
    got = np.asarray(_traced(jnp.asarray(a), jnp.asarray(nn, jnp.int32)))
    want = np.array([_py(x, m) for x, m in zip(a, nn)])
    np.testing.assert_array_equal(got, want)
    # float32 arithmetic alone would get a good share of these wrong: the test has teeth.
    naive = np.rint(a * nn.astype(np.float32)).astype(np.int64)
    assert np.sum(naive != want) > 100


@settings(max_examples=50, deadline=None)
@given(
    a=st.floats(0.0, 1.0, width=32),
    n=st.one_of(st.integers(0, 1000), st.integers(0, INT32_MAX)),
)
def test_traced_matches_python_property(a, n):
    got = _traced(jnp.asarray([a], jnp.float32), jnp.asarray([n], jnp.int32))
    assert int(got[0]) == _py(np.float32(a), n)
