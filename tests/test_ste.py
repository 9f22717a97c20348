"""Straight-through masks: masked forward, dense backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js


def mlp(p, x):
    h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def setup():
    rng = np.random.default_rng(0)
    p = {
        "Dense_0": {"kernel": rng.normal(size=(3, 5)), "bias": rng.normal(size=5)},
        "Dense_1": {"kernel": rng.normal(size=(5, 2)), "bias": rng.normal(size=2)},
    }
    # the kernels' larger half alive (NumPy: eager jaxsparse calls would each compile)
    mask = jax.tree.map(lambda w: np.abs(w) >= np.median(np.abs(w)) if w.ndim > 1 else w == w, p)
    p, mask = jax.tree.map(jnp.asarray, p), jax.tree.map(jnp.asarray, mask)
    x, y = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(4, 2)))
    return p, mask, x, y


def test_forward_is_masked_and_gradient_is_dense_at_the_masked_point():
    p, mask, x, y = setup()

    def loss(q):
        return jnp.mean((mlp(q, x) - y) ** 2)

    masked = js.apply_mask(p, mask)
    ste_out = jax.jit(lambda q, m: mlp(js.straight_through(q, m), x))(p, mask)
    np.testing.assert_array_equal(ste_out, mlp(masked, x))

    g_ste = jax.jit(jax.grad(lambda q, m: loss(js.straight_through(q, m))))(p, mask)
    g_dense = jax.grad(loss)(masked)  # the dense model's gradient at the masked point
    for k in ("Dense_0", "Dense_1"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(g_ste[k][leaf], g_dense[k][leaf], rtol=1e-6)
        # pruned weights get a gradient (zero only where the dense one is), unlike
        # through apply_mask
        pruned = ~np.asarray(mask[k]["kernel"])
        assert np.asarray(g_ste[k]["kernel"])[pruned].any()
        g_masked = jax.grad(lambda q: loss(js.apply_mask(q, mask)))(p)
        assert not np.asarray(g_masked[k]["kernel"])[pruned].any()
    # non-floating leaves pass through
    out = js.straight_through({**p, "step": jnp.int32(3)}, {**mask, "step": jnp.array(True)})
    assert int(out["step"]) == 3


def test_mask_must_mirror_params():
    p, mask, _, _ = setup()
    with pytest.raises(ValueError, match="straight_through: mask"):
        js.straight_through(p, {"Dense_0": mask["Dense_0"]})
