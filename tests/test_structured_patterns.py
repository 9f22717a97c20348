"""N:M and block patterns against NumPy references, with hypothesis-generated shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsparse as js
from jaxsparse import structured


def _nm_reference(scores: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Per group of m: keep the n largest (score, position) pairs (later wins a tie)."""
    s = np.moveaxis(scores, axis, -1)
    groups = s.reshape(-1, m)
    keep = np.zeros(groups.shape, bool)
    for g, row in enumerate(groups):
        order = np.lexsort((np.arange(m), np.where(np.isnan(row), -np.inf, row)))
        keep[g, order[m - n :]] = True
    return np.moveaxis(keep.reshape(s.shape), -1, axis)


@st.composite
def _nm_case(draw):
    m = draw(st.sampled_from([1, 2, 4, 8]))
    n = draw(st.integers(0, m))
    ndim = draw(st.integers(1, 3))
    shape = [draw(st.integers(1, 4)) for _ in range(ndim)]
    axis = draw(st.integers(-ndim, ndim - 1))
    shape[axis] = m * draw(st.integers(1, 3))
    # few distinct values: plenty of ties
    vals = draw(
        st.lists(st.integers(-3, 3), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
    )
    return np.float32(vals).reshape(shape), n, m, axis


@settings(max_examples=30, deadline=None)
@given(_nm_case())
def test_nm_keeps_exactly_n_of_every_m(case):
    scores, n, m, axis = case
    # jitted: one compile a shape instead of one per eager op
    nm = jax.jit(structured.nm, static_argnums=(1, 2), static_argnames="axis")
    mask = np.asarray(nm(jnp.asarray(scores), n, m, axis=axis))
    assert mask.shape == scores.shape and mask.dtype == bool
    per_group = np.moveaxis(mask, axis, -1).reshape(-1, m).sum(axis=1)
    assert np.all(per_group == n)
    np.testing.assert_array_equal(mask, _nm_reference(scores, n, m, axis))


def test_nm_ties_nan_and_jit():
    s = jnp.array([[1.0, 1.0, 1.0, 1.0, jnp.nan, 0.0, -1.0, jnp.nan]])
    # ties: the earlier entry is pruned first; NaN counts lowest
    want = np.array([[False, False, True, True, False, True, True, False]])
    np.testing.assert_array_equal(structured.nm(s, 2, 4), want)
    np.testing.assert_array_equal(jax.jit(lambda s: structured.nm(s, 2, 4))(s), want)


def test_nm_on_a_pytree_picks_kernels_and_names_bad_leaves():
    params = {
        "Dense_0": {"kernel": jnp.arange(32.0).reshape(8, 4), "bias": jnp.arange(4.0)},
        "Conv_0": {"kernel": jnp.ones((3, 3, 4, 6))},
    }
    mask = jax.jit(lambda p: structured.nm(js.scores.magnitude(p), 2, 4, axis=-2))(params)
    assert mask["Dense_0"]["bias"].all() and mask["Dense_0"]["bias"].dtype == jnp.bool_
    np.testing.assert_array_equal(mask["Dense_0"]["kernel"].reshape(2, 4, 4).sum(axis=1), 2)
    np.testing.assert_array_equal(mask["Dense_0"]["kernel"][2:4], True)  # largest of 0..3
    np.testing.assert_array_equal(mask["Conv_0"]["kernel"].sum(axis=2), 2)
    assert float(js.sparsity(mask)) == 0.5
    with pytest.raises(
        ValueError, match="'Conv_0/kernel' has 6 entries along axis -1, not a multiple of m=4"
    ):
        structured.nm(params, 2, 4)
    with pytest.raises(ValueError, match=r"axis 2 is out of range for 'Dense_0/kernel'"):
        structured.nm(params, 2, 4, axis=2, where="Dense_0/kernel")
    for n, m in ((5, 4), (-1, 4), (1, 0), (2.0, 4)):
        with pytest.raises(ValueError, match="0 <= n <= m"):
            structured.nm(params, n, m)


def test_blocks_pool_by_mean_and_prune_whole_blocks():
    rng = np.random.default_rng(0)
    params = {
        "Dense_0": {
            "kernel": jnp.asarray(rng.standard_normal((8, 6)), jnp.float32),
            "bias": jnp.ones(6),
        },
        "Conv_0": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.float32)},
    }
    s = js.scores.magnitude(params)
    bs = structured.blocks(s, (2, 3))
    k = np.abs(np.asarray(params["Dense_0"]["kernel"]))
    np.testing.assert_allclose(
        bs["Dense_0"]["kernel"], k.reshape(4, 2, 2, 3).mean(axis=(1, 3)), rtol=1e-6
    )
    c = np.abs(np.asarray(params["Conv_0"]["kernel"]))
    np.testing.assert_allclose(
        bs["Conv_0"]["kernel"], c.reshape(3, 3, 2, 2, 2, 3).mean(axis=(3, 5)), rtol=1e-6
    )
    assert bs["Dense_0"]["bias"] is s["Dense_0"]["bias"]  # not a kernel: passed through
    bmask = jax.jit(lambda b: js.prune(b, js.mask_like(b), 0.5, scope="global"))(bs)
    n_blocks = 4 * 2 + 3 * 3 * 2 * 2
    alive_blocks = int(jnp.sum(bmask["Dense_0"]["kernel"]) + jnp.sum(bmask["Conv_0"]["kernel"]))
    assert alive_blocks == n_blocks - round(0.5 * n_blocks)
    mask = structured.unblock(bmask, (2, 3), params)
    js.check_mask(mask, params)
    assert bool(mask["Dense_0"]["bias"].all())
    d = np.asarray(mask["Dense_0"]["kernel"]).reshape(4, 2, 2, 3)
    assert np.all(d == d[:, :1, :, :1])  # constant within every block
    np.testing.assert_array_equal(d[:, 0, :, 0], bmask["Dense_0"]["kernel"])
    assert float(js.sparsity(mask)) == pytest.approx(0.5)


def test_blocks_bad_input():
    with pytest.raises(ValueError, match="block must be a non-empty tuple"):
        structured.blocks(jnp.ones((4, 4)), (0, 2))
    with pytest.raises(ValueError, match=r"'w' of shape \(4, 5\): 5 is not a multiple"):
        structured.blocks({"w": jnp.ones((4, 5))}, (2, 2))
    with pytest.raises(ValueError, match="fewer axes than block"):
        structured.blocks(jnp.ones(4), (2, 2))
    with pytest.raises(ValueError, match=r"'w' expands to \(4, 4\), params have \(4, 6\)"):
        structured.unblock({"w": jnp.ones((2, 2), bool)}, (2, 2), {"w": jnp.ones((4, 6))})
    with pytest.raises(ValueError, match="does not mirror"):
        structured.unblock({"v": jnp.ones((2, 2), bool)}, (2, 2), {"w": jnp.ones((4, 4))})
