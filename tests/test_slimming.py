"""``jaxsparse.slimming``: the L1 subgradient on chosen leaves, alone and under ``masked``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js


def _params():
    rng = np.random.default_rng(0)
    return {
        "Conv_0": {
            "kernel": jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32),
            "bias": jnp.zeros(4),
        },
        "BatchNorm_0": {"scale": jnp.array([1.5, -0.2, 0.0, 0.7]), "bias": jnp.ones(4)},
        "Dense_0": {
            "kernel": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
            "bias": jnp.zeros(3),
        },
    }


def _loss(params):
    x = jnp.linspace(-1.0, 1.0, 4)
    h = params["BatchNorm_0"]["scale"] * x + params["BatchNorm_0"]["bias"]
    out = jnp.tanh(h) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    return jnp.sum(out**2) + jnp.sum(params["Conv_0"]["kernel"] ** 2)


def test_adds_strength_times_sign_to_the_chosen_leaves_only():
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    tx = js.slimming(1e-2, where=r"BatchNorm_\d+/scale")
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    np.testing.assert_allclose(
        updates["BatchNorm_0"]["scale"], 0.25 + 1e-2 * np.float32([1, -1, 0, 1]), rtol=1e-7
    )
    for path in [("BatchNorm_0", "bias"), ("Conv_0", "kernel"), ("Dense_0", "kernel")]:
        np.testing.assert_array_equal(updates[path[0]][path[1]], grads[path[0]][path[1]])


def test_equals_sgd_on_the_l1_penalised_loss():
    strength, lr = 0.05, 0.1
    params = _params()
    params["BatchNorm_0"]["scale"] = jnp.array([1.5, -0.2, 0.3, 0.7])  # no zero: |x| smooth

    def penalised(p):
        return _loss(p) + strength * jnp.sum(jnp.abs(p["BatchNorm_0"]["scale"]))

    tx = optax.chain(js.slimming(strength, where="scale"), optax.sgd(lr))
    ref_tx = optax.sgd(lr)

    @jax.jit
    def run(params):
        def body(_, c):
            p, s, q, r = c
            u, s = tx.update(jax.grad(_loss)(p), s, p)
            v, r = ref_tx.update(jax.grad(penalised)(q), r, q)
            return optax.apply_updates(p, u), s, optax.apply_updates(q, v), r

        init = (params, tx.init(params), params, ref_tx.init(params))
        return jax.lax.fori_loop(0, 5, body, init)

    p, _, q, _ = run(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p, q)


def test_chains_with_masked_and_pruned_scales_stay_zero():
    params = _params()
    mask = js.mask_like(params)
    mask["BatchNorm_0"]["scale"] = jnp.array([True, False, True, False])
    params = js.apply_mask(params, mask)
    for tx in [
        js.masked(optax.chain(js.slimming(1e-2, where="scale"), optax.adam(1e-2)), mask),
        optax.chain(js.slimming(1e-2, where="scale"), js.masked(optax.adam(1e-2), mask)),
    ]:
        state, p = tx.init(params), params

        @jax.jit
        def step(p, state, tx=tx):
            u, state = tx.update(jax.grad(_loss)(p), state, p)
            return optax.apply_updates(p, u), state

        for _ in range(20):
            p, state = step(p, state)
        gamma = np.asarray(p["BatchNorm_0"]["scale"])
        assert gamma[1] == 0.0 and gamma[3] == 0.0
        assert np.all(gamma[[0, 2]] != np.asarray(params["BatchNorm_0"]["scale"])[[0, 2]])


def test_bad_input():
    tx = js.slimming(1e-4, where="scale")
    params = _params()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))
    for bad in (-1e-4, float("nan"), [1e-4]):
        with pytest.raises(ValueError, match="strength must be"):
            js.slimming(bad, where="scale")
    with pytest.raises(TypeError, match="where="):
        js.slimming(1e-4, where=3)
