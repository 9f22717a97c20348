"""Importance scores: values, structure, determinism and errors naming the path."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxsparse import scores


def _params():
    return {
        "Dense_0": {
            "kernel": jnp.array([[-3.0, 0.5], [0.0, -0.25]]),
            "bias": jnp.array([-1.0, 2.0]),
        },
        "Dense_1": {"kernel": jnp.array([[1.5], [-7.0]], jnp.bfloat16)},
    }


def test_magnitude_is_abs():
    p = _params()
    s = scores.magnitude(p)
    assert jax.tree.structure(s) == jax.tree.structure(p)
    np.testing.assert_array_equal(np.asarray(s["Dense_0"]["kernel"]), [[3.0, 0.5], [0.0, 0.25]])
    np.testing.assert_array_equal(np.asarray(s["Dense_0"]["bias"]), [1.0, 2.0])
    assert s["Dense_1"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(s["Dense_1"]["kernel"], np.float32), [[1.5], [7.0]])


def test_magnitude_under_jit():
    p = _params()
    s = jax.jit(scores.magnitude)(p)
    np.testing.assert_array_equal(np.asarray(s["Dense_0"]["kernel"]), [[3.0, 0.5], [0.0, 0.25]])


def test_magnitude_passes_int_leaves_through():
    p = {"enc": {"w": -jnp.ones((2, 2)), "step": jnp.full((2, 2), -3, jnp.int32)}}
    s = scores.magnitude(p)
    assert s["enc"]["step"].dtype == jnp.int32
    np.testing.assert_array_equal(s["enc"]["step"], p["enc"]["step"])
    np.testing.assert_array_equal(s["enc"]["w"], jnp.ones((2, 2)))


def test_random_scores_shapes_range_and_determinism():
    p = {"a": jnp.ones((50, 40)), "b": [jnp.ones(30), jnp.ones((3, 3, 4, 5), jnp.bfloat16)]}
    key = jax.random.key(0)
    s = scores.random(key, p)
    assert jax.tree.structure(s) == jax.tree.structure(p)
    for x, q in zip(jax.tree.leaves(s), jax.tree.leaves(p)):
        assert x.shape == q.shape and x.dtype == jnp.float32
        x = np.asarray(x)
        assert x.min() >= 0.0 and x.max() < 1.0
    big = np.asarray(s["a"])
    assert 0.45 < big.mean() < 0.55  # uniform on [0, 1)
    assert len(np.unique(big)) > 1990  # essentially tie-free
    # same key, same scores; another key, other scores
    s2 = scores.random(key, p)
    for x, y in zip(jax.tree.leaves(s), jax.tree.leaves(s2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    s3 = scores.random(jax.random.key(1), p)
    assert not np.array_equal(np.asarray(s["a"]), np.asarray(s3["a"]))


def test_random_streams_differ_between_equal_leaves():
    p = {"a": jnp.ones((8, 8)), "b": jnp.ones((8, 8))}
    s = scores.random(jax.random.key(3), p)
    assert not np.array_equal(np.asarray(s["a"]), np.asarray(s["b"]))


def test_random_passes_int_leaves_through():
    s = scores.random(jax.random.key(0), {"counts": jnp.arange(3), "w": jnp.ones((2, 2))})
    np.testing.assert_array_equal(s["counts"], jnp.arange(3))
    assert s["w"].dtype == jnp.float32 and bool((s["w"] < 1).all())
