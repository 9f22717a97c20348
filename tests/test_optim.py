"""``jaxsparse.masked``: pruned weights stay exactly zero under any optax optimizer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsparse as js

N_STEPS = 100


def _params(seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    return {
        "Dense_0": {"kernel": jax.random.normal(k[0], (6, 8)), "bias": 0.1 * jnp.ones(8)},
        "Dense_1": {"kernel": jax.random.normal(k[1], (8, 3)), "bias": jnp.zeros(3)},
    }


def _data():
    kx, ky = jax.random.split(jax.random.key(42))
    return jax.random.normal(kx, (16, 6)), jax.random.normal(ky, (16, 3))


def _apply(params, x):
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


def loss_fn(params, batch):
    x, y = batch
    # the ridge term keeps every gradient entry nonzero, also at pruned (zero) weights
    ridge = sum(jnp.sum((p - 0.3) ** 2) for p in jax.tree.leaves(params))
    return jnp.mean((_apply(params, x) - y) ** 2) + 1e-2 * ridge


def _mask(seed=1, p=0.6):
    params = _params()
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    m = [jax.random.bernoulli(k, p, x.shape) for k, x in zip(keys, leaves)]
    m = jax.tree.unflatten(treedef, m)
    # one bias partly pruned too: masks are per weight, not just per kernel
    m["Dense_1"]["bias"] = jnp.array([True, False, True])
    return m


OPTIMIZERS = {
    "sgd": lambda: optax.sgd(1e-2),
    "sgd_nesterov": lambda: optax.sgd(1e-2, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "lion": lambda: optax.lion(1e-3),
    "adafactor": lambda: optax.adafactor(1e-2),
    "rmsprop": lambda: optax.rmsprop(1e-2),
    "lamb": lambda: optax.lamb(1e-2),
    "noisy_sgd": lambda: optax.noisy_sgd(1e-2, key=jax.random.key(0)),
    "clip_adam_cosine": lambda: optax.chain(
        optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(1e-2, N_STEPS))
    ),
    "inject_adam": lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
}


def _train_both(inner, params0, mask, batch):
    """N_STEPS of masked(inner) and, beside it, inner alone on masked grads and params.

    Returns the masked run's params and state, the reference run's params, and the largest
    one-step gap on alive weights between masked(inner) and inner applied to the masked
    gradients from the very same params and inner state.
    """
    tx = js.masked(inner, mask)

    def step(carry, _):
        (p, s), (rp, rs), gap = carry
        g = jax.grad(loss_fn)(p, batch)
        u, s_new = tx.update(g, s, p)
        p_new = optax.apply_updates(p, u)
        # one step of inner alone from the same point, on gradients zeroed where pruned
        ou, _ = inner.update(js.apply_mask(g, mask), s.inner_state, p)
        one = optax.apply_updates(p, ou)
        gaps = [
            jnp.max(jnp.where(m, jnp.abs(a - b), 0.0))
            for a, b, m in zip(*map(jax.tree.leaves, (p_new, one, mask)))
        ]
        gap = jnp.maximum(gap, jnp.max(jnp.stack(gaps)))
        # the reference run: inner alone, gradients zeroed where pruned, params kept masked
        rg = js.apply_mask(jax.grad(loss_fn)(rp, batch), mask)
        ru, rs = inner.update(rg, rs, rp)
        rp = js.apply_mask(optax.apply_updates(rp, ru), mask)
        return ((p_new, s_new), (rp, rs), gap), None

    carry = ((params0, tx.init(params0)), (params0, inner.init(params0)), jnp.float32(0.0))
    ((p, s), (rp, _), gap), _ = jax.lax.scan(step, carry, None, length=N_STEPS)
    return p, s, rp, gap


_train_both_jit = jax.jit(_train_both, static_argnums=0)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_pruned_stay_zero_and_alive_follow_inner(name):
    mask = _mask()
    params0 = js.apply_mask(_params(), mask)
    p, s, rp, gap = _train_both_jit(OPTIMIZERS[name](), params0, mask, _data())
    # every step, alive weights move exactly as inner moves them on the masked gradients
    assert float(gap) <= 1e-6, name
    moved = 0
    for path, x, m, x0, r in zip(
        ["D0/b", "D0/k", "D1/b", "D1/k"],
        jax.tree.leaves(p),
        jax.tree.leaves(mask),
        jax.tree.leaves(params0),
        jax.tree.leaves(rp),
    ):
        x, m, x0, r = map(np.asarray, (x, m, x0, r))
        assert np.all(x[~m] == 0.0), f"{name}: a pruned weight moved in {path}"
        moved += np.sum(x[m] != x0[m])
        # and over 100 steps the whole run tracks the separate reference run; the two are
        # compiled into differently fused code, whose last-bit differences adaptive
        # optimizers amplify a little, hence a tolerance here (eagerly they agree exactly)
        # rmsprop (no momentum) takes steps of about its learning rate even at the optimum,
        # so a flipped last bit can move a weight by ~lr; it gets a tolerance of 2 lr
        atol = 2e-2 if name == "rmsprop" else 1e-4
        np.testing.assert_allclose(x[m], r[m], rtol=1e-2, atol=atol, err_msg=f"{name} {path}")
    assert moved > 0.9 * sum(int(np.sum(m)) for m in jax.tree.leaves(mask))
    # the mask in the state is the one given, untouched by training
    for a, b in zip(jax.tree.leaves(js.get_mask(s)), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # training made progress
    assert float(loss_fn(p, _data())) < float(loss_fn(params0, _data()))


def test_alive_follow_inner_exactly_eager():
    """Unjitted, masked(adam) and adam alone on the masked problem agree bit for bit."""
    mask = _mask()
    params0 = js.apply_mask(_params(), mask)
    inner = optax.adamw(1e-2, weight_decay=0.1)
    tx = js.masked(inner, mask)
    p, s, rp, rs = params0, tx.init(params0), params0, inner.init(params0)
    for _ in range(3):
        u, s = tx.update(jax.grad(loss_fn)(p, _data()), s, p)
        p = optax.apply_updates(p, u)
        rg = js.apply_mask(jax.grad(loss_fn)(rp, _data()), mask)
        ru, rs = inner.update(rg, rs, rp)
        rp = js.apply_mask(optax.apply_updates(rp, ru), mask)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(rp)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the moments of pruned weights stayed exactly zero
    mu, nu = s.inner_state[0].mu, s.inner_state[0].nu
    for a, b, m in zip(*map(jax.tree.leaves, (mu, nu, mask))):
        m = np.asarray(m)
        assert np.all(np.asarray(a)[~m] == 0.0) and np.all(np.asarray(b)[~m] == 0.0)
        assert np.all(np.asarray(b)[m] > 0.0)


def test_unmasked_params_become_zero_after_one_step():
    params = jax.tree.map(lambda x: x + 0.5, _params())  # pruned weights not zero yet
    mask = _mask()
    tx = js.masked(optax.sgd(0.1), mask)
    state = tx.init(params)
    grads = jax.grad(loss_fn)(params, _data())
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    for x, p, g, m in zip(*map(jax.tree.leaves, (new, params, grads, mask))):
        x, p, g, m = map(np.asarray, (x, p, g, m))
        assert np.all(p[~m] != 0.0)  # the test has teeth
        assert np.all(x[~m] == 0.0)
        np.testing.assert_array_equal(x[m], (p - np.float32(0.1) * g)[m])
    # without params, the update at pruned positions is simply zero
    updates, _ = tx.update(grads, tx.init(params))
    for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(mask)):
        assert np.all(np.asarray(u)[~np.asarray(m)] == 0.0)


def test_default_mask_is_dense_and_matches_inner():
    params = _params()
    grads = jax.grad(loss_fn)(params, _data())
    tx, inner = js.masked(optax.adam(1e-2)), optax.adam(1e-2)
    s = tx.init(params)
    assert all(bool(jnp.all(m)) for m in jax.tree.leaves(js.get_mask(s)))
    u, _ = tx.update(grads, s, params)
    ru, _ = inner.update(grads, inner.init(params), params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(ru)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_checks_mask_naming_path():
    bad = _mask()
    bad["Dense_0"]["kernel"] = jnp.ones((8, 6), bool)
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        js.masked(optax.sgd(0.1), bad).init(_params())


# --- get_mask / set_mask ---------------------------------------------------------------


def test_get_and_set_mask_inside_chain():
    params = _params()
    tx = optax.chain(optax.clip_by_global_norm(1.0), js.masked(optax.adam(1e-2)))
    state = tx.init(params)
    assert all(bool(jnp.all(m)) for m in jax.tree.leaves(js.get_mask(state)))
    # one dense step so the inner state is not fresh
    grads = jax.grad(loss_fn)(params, _data())
    _, state = tx.update(grads, state, params)
    mask = _mask()
    new_state = js.set_mask(state, mask)
    for a, b in zip(jax.tree.leaves(js.get_mask(new_state)), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # everything else is kept: the clip state and adam's count and moments
    old_inner, new_inner = state[1].inner_state, new_state[1].inner_state
    for a, b in zip(jax.tree.leaves(old_inner), jax.tree.leaves(new_inner)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(new_inner[0].count) == 1
    # the old state is not mutated
    assert all(bool(jnp.all(m)) for m in jax.tree.leaves(js.get_mask(state)))
    # the new mask is enforced on the next step
    updates, _ = tx.update(grads, new_state, params)
    new = optax.apply_updates(params, updates)
    for x, m in zip(jax.tree.leaves(new), jax.tree.leaves(mask)):
        assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0)
        assert np.all(np.asarray(x)[np.asarray(m)] != 0.0)


def test_set_mask_wrong_shape_names_path():
    params = _params()
    state = optax.chain(optax.sgd(0.1), js.masked(optax.adam(1e-2))).init(params)
    bad = _mask()
    bad["Dense_1"]["kernel"] = jnp.ones((3, 8), bool)
    with pytest.raises(ValueError, match="Dense_1/kernel"):
        js.set_mask(state, bad)
    bad = _mask()
    bad["Dense_1"]["bias"] = jnp.ones(3, jnp.float32)
    with pytest.raises(TypeError, match="Dense_1/bias"):
        js.set_mask(state, bad)


def test_get_mask_without_masked_raises():
    state = optax.adam(1e-2).init(_params())
    with pytest.raises(ValueError, match="masked"):
        js.get_mask(state)
    with pytest.raises(ValueError, match="masked"):
        js.set_mask(state, _mask())


def test_extra_args_pass_through_chain():
    # chain() hands value= to every member; an inner without extra-args support must cope
    params = _params()
    mask = _mask()
    tx = optax.chain(
        js.masked(optax.clip(1.0), mask),  # a plain GradientTransformation inside
        optax.scale(-0.1),
        optax.contrib.reduce_on_plateau(),
    )
    state = tx.init(params)
    grads = jax.grad(loss_fn)(params, _data())
    updates, _ = tx.update(grads, state, params, value=jnp.float32(1.0))
    for u, g, m in zip(*map(jax.tree.leaves, (updates, grads, mask))):
        u, g, m = map(np.asarray, (u, g, m))
        np.testing.assert_allclose(u[m], -0.1 * np.clip(g, -1, 1)[m], rtol=1e-6)


# --- jit and Flax ----------------------------------------------------------------------


def test_new_mask_does_not_retrace():
    tx = js.masked(optax.adam(1e-2))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    chex.clear_trace_counter()
    params = _params()
    opt_state = tx.init(params)
    for seed in range(4):
        mask = _mask(seed=10 + seed, p=0.3 + 0.1 * seed)
        opt_state = js.set_mask(opt_state, mask)
        params, opt_state = step(params, opt_state, _data())
        for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)):
            assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0)
            assert np.all(np.asarray(x)[np.asarray(m)] != 0.0)


def test_flax_train_state_apply_gradients():
    mask = _mask()
    params0 = js.apply_mask(_params(), mask)
    ts = train_state.TrainState.create(
        apply_fn=_apply, params=params0, tx=js.masked(optax.adam(1e-2), mask)
    )

    @jax.jit
    def train(ts, batch):
        def body(ts, _):
            grads = jax.grad(loss_fn)(ts.params, batch)
            return ts.apply_gradients(grads=grads), None

        return jax.lax.scan(body, ts, None, length=20)[0]

    ts = train(ts, _data())
    assert int(ts.step) == 20
    for x, m in zip(jax.tree.leaves(ts.params), jax.tree.leaves(mask)):
        assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0)
    # and it is the same as the plain optax loop
    tx = js.masked(optax.adam(1e-2), mask)
    p, s = params0, tx.init(params0)
    for _ in range(20):
        u, s = tx.update(jax.grad(loss_fn)(p, _data()), s, p)
        p = optax.apply_updates(p, u)
    for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(js.get_mask(ts.opt_state)), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _params_shaped(opt_state, params):
    """The float subtrees of ``opt_state`` that mirror ``params`` (moments, traces)."""
    treedef, shapes = jax.tree.structure(params), [x.shape for x in jax.tree.leaves(params)]

    def like(x):
        leaves, td = jax.tree.flatten(x)
        return td == treedef and [jnp.shape(v) for v in leaves] == shapes

    found = [x for x in jax.tree.leaves(opt_state, is_leaf=like) if like(x)]
    return [
        x for x in found if all(jnp.issubdtype(v.dtype, jnp.floating) for v in jax.tree.leaves(x))
    ]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_moments_of_newly_pruned_weights_are_zero_after_the_next_update(name):
    """set_mask prunes more mid-training; masked() zeroes the new pruned weights' moments
    as the next update reads them, so they come out of that update at 0 (adafactor's
    full second moment of small leaves at its eps1 = 1e-30: it adds eps to g^2)."""
    tx, params = js.masked(OPTIMIZERS[name]()), _params()
    state, batch = tx.init(params), _data()
    for _ in range(3):  # dense steps: every moment nonzero
        u, state = tx.update(jax.grad(loss_fn)(params, batch), state, params)
        params = optax.apply_updates(params, u)
    mask = _mask()
    stats = _params_shaped(state, params)
    assert name in ("sgd", "noisy_sgd") or any(
        np.any(np.asarray(v)[~np.asarray(m)] != 0)
        for s in stats
        for v, m in zip(jax.tree.leaves(s), jax.tree.leaves(mask))
    ), "the test needs nonzero moments at the weights it prunes"
    state = js.set_mask(state, mask)
    params = js.apply_mask(params, mask)
    u, state = jax.jit(tx.update)(jax.grad(loss_fn)(params, batch), state, params)
    limit = 1e-29 if name == "adafactor" else 0.0
    for s in _params_shaped(state, params):
        for v, m in zip(jax.tree.leaves(s), jax.tree.leaves(mask)):
            assert np.all(np.abs(np.asarray(v)[~np.asarray(m)]) <= limit), name
    for x, m in zip(jax.tree.leaves(optax.apply_updates(params, u)), jax.tree.leaves(mask)):
        assert np.all(np.asarray(x)[~np.asarray(m)] == 0.0), name


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_packed_mask_steps_bit_for_bit_like_the_bool_mask(name):
    """masked(packed=True) holds the mask as bits where a leaf's last dimension is a
    multiple of 8 (Dense_0 here; Dense_1's 3 stays bool), and its updates, inner state
    and params equal the bool form's bit for bit, through a set_mask mid-run."""
    params, batch = _params(), _data()
    txs = {p: js.masked(OPTIMIZERS[name](), _mask(), packed=p) for p in (False, True)}
    held = jax.tree.map(lambda x: (x.dtype, x.shape), txs[True].init(params).mask)
    assert held["Dense_0"]["kernel"] == (np.uint8, (6, 1))
    assert held["Dense_0"]["bias"] == (np.uint8, (1,))
    assert held["Dense_1"]["kernel"] == (np.bool_, (8, 3))

    def run(tx):  # eagerly: jitted, the two forms fuse differently (last-bit FMA changes)
        p, s, us = params, tx.init(params), []
        for i in range(8):
            if i == 4:
                s = js.set_mask(s, _mask(seed=7, p=0.4))
            u, s = tx.update(jax.grad(loss_fn)(p, batch), s, p)
            p, us = optax.apply_updates(p, u), [*us, u]
        return (p, s), us

    (p0, s0), u0 = run(txs[False])
    (p1, s1), u1 = run(txs[True])
    for a, b in zip(
        jax.tree.leaves((p0, s0.inner_state, u0, js.get_mask(s0))),
        jax.tree.leaves((p1, s1.inner_state, u1, js.get_mask(s1))),
        strict=True,
    ):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # noisy_sgd's key
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert js.get_mask(s1)["Dense_0"]["kernel"].dtype == jnp.bool_


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=2).map(tuple),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_matches_numpy_packbits_and_round_trips(shape, k, seed):
    from jaxsparse.optim import _pack, _unpack

    m = np.random.default_rng(seed).random((*shape, 8 * k)) < 0.5
    bits = _pack(jnp.asarray(m))
    np.testing.assert_array_equal(np.asarray(bits), np.packbits(m, axis=-1, bitorder="little"))
    np.testing.assert_array_equal(np.asarray(_unpack(bits)), m)


def test_packed_must_be_a_bool():
    with pytest.raises(TypeError, match=r"masked\(\): packed must be a bool"):
        js.masked(optax.sgd(0.1), packed="yes")
