"""SET and RigL: exact drop/grow against NumPy, invariants over 50 jitted updates,
the dropped-and-regrown rule, optimizer moments, no recompile, bad arguments."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
import pytest
from flax.training import train_state

import jaxsparse as js
from jaxsparse import dst

SIZES = {"Dense_0": (8, 16), "Dense_1": (16, 4)}
# Compiling an update takes seconds, running it microseconds: jitted once, with the
# hyperparameters traced too (they may be data), so the tests share one program.
# one optimizer object: it is static metadata of the state, a new one would retrace
TX = js.masked(optax.adam(1e-2))
_RIGL = jax.jit(
    lambda s, g, every, end, alpha, start: dst.rigl(
        s, g, every=every, end=end, alpha=alpha, start=start
    )
)
_SET = jax.jit(
    lambda s, k, every, end, zeta, cosine: dst.set(
        s, k, every=every, end=end, zeta=zeta, cosine=cosine
    ),
    static_argnums=5,
)


def RIGL(s, g, *, every, end, alpha=0.3, start=0):
    return _RIGL(s, g, every, end, alpha, start)


def SET(s, k, *, every, end, zeta=0.3, cosine=False):
    return _SET(s, k, every, end, zeta, cosine)


def init(seed=0, density=0.3):
    """Random kernels and a random mask of the given density per kernel (NumPy: eager
    jaxsparse calls would each compile)."""
    rng = np.random.default_rng(seed)
    params, mask = {}, {}
    for name, (a, b) in SIZES.items():
        alive = np.zeros(a * b, bool)
        alive[rng.permutation(a * b)[: round(density * a * b)]] = True
        params[name] = {"kernel": jnp.asarray(rng.normal(size=(a, b)), jnp.float32),
                        "bias": jnp.zeros(b)}  # fmt: skip
        mask[name] = {"kernel": jnp.asarray(alive.reshape(a, b)), "bias": jnp.ones(b, bool)}
    return params, mask


def loss_fn(p, batch):
    x, y = batch
    h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return jnp.mean((h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"] - y) ** 2)


def batch_at(step):
    rng = np.random.default_rng(1000 + step)
    return jnp.asarray(rng.normal(size=(16, 8))), jnp.asarray(rng.normal(size=(16, 4)))


def kernels_of(tree):
    return [np.asarray(tree[name]["kernel"]) for name in SIZES]


def moments(state):
    return [kernels_of(otu.tree_get(state.opt_state, "mu")),
            kernels_of(otu.tree_get(state.opt_state, "nu"))]  # fmt: skip


@pytest.mark.parametrize("algo", ["rigl", "set"])
def test_fifty_updates_inside_jit_keep_counts_zero_grown_and_never_retrace(algo):
    params, mask = init()
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=TX, mask=mask)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, batch, key):
        grads = jax.grad(loss_fn)(state.params, batch)
        state = state.apply_gradients(grads=grads)
        if algo == "rigl":
            return dst.rigl(state, grads, every=2, end=10_000, alpha=0.3)
        return dst.set(state, key, every=2, end=10_000, zeta=0.3)

    alive0 = [m.sum() for m in kernels_of(mask)]
    keys = jax.random.split(jax.random.key(0), 100)
    updates = changed = 0
    for t in range(100):
        old_mask = kernels_of(state.mask)
        state = step(state, batch_at(t), keys[t])
        new_mask, w = kernels_of(state.mask), kernels_of(state.params)
        assert [m.sum() for m in new_mask] == alive0
        for old, new, p, mu, nu in zip(old_mask, new_mask, w, *moments(state)):
            assert not p[~new].any()  # dead weights are exactly zero
            grown = new & ~old
            assert grown.sum() == (old & ~new).sum()
            assert not p[grown].any() and not mu[grown].any() and not nu[grown].any()
            changed += int(grown.sum())
        updates += int(state.step) % 2 == 0
    assert updates == 50
    assert changed > 50  # the masks really moved
    assert bool(state.mask["Dense_0"]["bias"].all())


def np_rigl(w, m, g, f):
    """NumPy reference: drop the k smallest |w| alive, grow the k largest |g| among the
    dead after the drop (stable sorts: ties to the first in row-major order)."""
    w, m, g = w.ravel(), m.ravel().copy(), g.ravel()
    k = round(float(np.float32(f)) * int(m.sum()))
    alive = np.flatnonzero(m)
    m[alive[np.argsort(np.abs(w[alive]), kind="stable")[:k]]] = False
    dead = np.flatnonzero(~m)
    m[dead[np.argsort(-np.abs(g[dead]), kind="stable")[:k]]] = True
    return m


def test_rigl_matches_numpy_with_cosine_fraction():
    params, mask = init(seed=3, density=0.4)
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=TX, mask=mask)
    grads = jax.grad(loss_fn)(state.params, batch_at(0))
    for step in (0, 30, 60):
        s = state.replace(step=jnp.int32(step))
        new = RIGL(s, grads, every=30, end=90, alpha=0.6)
        f = 0.3 * (1 + np.cos(np.pi * np.float32(step) / 90))
        for name in SIZES:
            want = np_rigl(
                np.asarray(s.params[name]["kernel"]),
                np.asarray(s.mask[name]["kernel"]),
                np.asarray(grads[name]["kernel"]),
                f,
            )
            np.testing.assert_array_equal(np.ravel(new.mask[name]["kernel"]), want)


def test_just_dropped_weight_can_be_regrown_and_is_then_untouched():
    p = {"w": jnp.array([[0.1, 2.0, 0.0], [0.0, 0.0, 3.0]])}
    m = {"w": jnp.array([[True, True, False], [False, False, True]])}
    state = js.SparseTrainState.create(apply_fn=None, params=p, tx=optax.adam(0.01), mask=m)
    state = state.apply_gradients(grads={"w": jnp.ones((2, 3))}).replace(step=jnp.int32(0))
    before = state
    # k = round(0.6 * 3) = 2 drops 0.09 and 1.99; the largest |g| among the dead is at
    # the just-dropped (0, 0), the second at the never-alive (1, 1)
    g = {"w": jnp.array([[9.0, 0.0, 0.0], [0.0, 5.0, 0.0]])}
    new = RIGL(state, g, every=30, end=90, alpha=0.6)
    np.testing.assert_array_equal(new.mask["w"], [[True, False, False], [False, True, True]])
    w, w0 = np.asarray(new.params["w"]), np.asarray(before.params["w"])
    assert w[0, 0] == w0[0, 0] != 0  # regrown: value kept
    assert w[0, 1] == 0 and w[1, 1] == 0  # dropped; grown at zero
    # moments: masked() zeroes a dropped weight's as the next update reads them; with
    # zero gradients that update leaves 0.9 x what it read (Adam's b1)
    mu0 = np.asarray(otu.tree_get(before.opt_state, "mu")["w"])
    after = new.apply_gradients(grads={"w": jnp.zeros((2, 3))})
    mu = np.asarray(otu.tree_get(after.opt_state, "mu")["w"])
    assert mu0[0, 0] != 0 and mu0[0, 1] != 0
    assert mu[0, 0] == np.float32(0.9) * mu0[0, 0]  # regrown: moment kept
    assert mu[0, 1] == 0 and mu[1, 1] == 0  # dropped: zeroed; grown: was 0 while dead
    assert np.asarray(after.params["w"])[0, 1] == 0


def test_set_drops_smallest_and_grows_at_random():
    params, mask = init(seed=5, density=0.5)
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=TX, mask=mask)
    a = SET(state, jax.random.key(0), every=10, end=100, zeta=0.25)
    b = SET(state, jax.random.key(1), every=10, end=100, zeta=0.25)
    for name in SIZES:
        w, old = np.asarray(params[name]["kernel"]).ravel(), np.asarray(mask[name]["kernel"])
        old = old.ravel()
        k = round(0.25 * int(old.sum()))
        alive = np.flatnonzero(old)
        drop = np.zeros_like(old)
        drop[alive[np.argsort(np.abs(w[alive]), kind="stable")[:k]]] = True
        for s in (a, b):
            new = np.asarray(s.mask[name]["kernel"]).ravel()
            assert not (old & ~new & ~drop).any()  # only the k smallest turn off
            assert (new & ~old).sum() + (new & drop).sum() == k  # k grown in all
    assert not np.array_equal(a.mask["Dense_0"]["kernel"], b.mask["Dense_0"]["kernel"])
    # the step is folded into the key: one key grows differently at each update
    c = SET(state.replace(step=jnp.int32(10)), jax.random.key(0), every=10, end=100, zeta=0.25)
    assert not np.array_equal(a.mask["Dense_0"]["kernel"], c.mask["Dense_0"]["kernel"])


def test_no_update_off_schedule_and_constant_or_cosine_fraction():
    params, mask = init()
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=TX, mask=mask)
    grads = jax.grad(loss_fn)(state.params, batch_at(0))
    for step in (0, 7, 15, 20):  # before start, off the grid, at end, after end
        s = state.replace(step=jnp.int32(step))
        new = RIGL(s, grads, every=5, start=5, end=15)
        chex.assert_trees_all_equal(new.params, s.params)
        chex.assert_trees_all_equal(new.opt_state, s.opt_state)
    changes = {}
    for cosine in (False, True):
        s = state.replace(step=jnp.int32(50))
        new = SET(s, jax.random.key(0), every=10, end=100, zeta=0.25, cosine=cosine)
        old = np.asarray(s.mask["Dense_0"]["kernel"])
        gone = old & ~np.asarray(new.mask["Dense_0"]["kernel"])
        changes[cosine] = gone.sum()
    # with cosine the fraction at t = end/2 is zeta/2: about half as many changes
    assert changes[True] < changes[False]


def test_flax_train_state_with_masked_tx():
    params, mask = init()
    tx = js.masked(optax.adam(1e-2), mask)
    state = train_state.TrainState.create(apply_fn=None, params=js.apply_mask(params, mask), tx=tx)
    grads = jax.grad(loss_fn)(state.params, batch_at(0))
    state = state.apply_gradients(grads=grads).replace(step=jnp.int32(30))
    new = RIGL(state, grads, every=30, end=90, alpha=0.6)
    new_mask = js.get_mask(new.opt_state)
    assert not np.array_equal(new_mask["Dense_0"]["kernel"], mask["Dense_0"]["kernel"])
    for name in SIZES:
        assert int(new_mask[name]["kernel"].sum()) == int(mask[name]["kernel"].sum())
        assert not np.asarray(new.params[name]["kernel"])[
            ~np.asarray(new_mask[name]["kernel"])
        ].any()


def test_bad_arguments_name_the_argument():
    params, mask = init()
    state = js.SparseTrainState.create(apply_fn=None, params=params, tx=TX, mask=mask)
    grads = jax.tree.map(jnp.zeros_like, params)
    key = jax.random.key(0)
    for every in (0, -5, 2.5):
        with pytest.raises(ValueError, match="every"):
            dst.rigl(state, grads, every=every, end=10)
        with pytest.raises(ValueError, match="every"):
            dst.set(state, key, every=every, end=10)
    with pytest.raises(ValueError, match=r"end \(5\) must come after start \(5\)"):
        dst.rigl(state, grads, every=1, start=5, end=5)
    with pytest.raises(ValueError, match="end"):
        dst.set(state, key, every=1, start=10, end=2)
    for alpha in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            dst.rigl(state, grads, every=1, end=10, alpha=alpha)
        with pytest.raises(ValueError, match="zeta"):
            dst.set(state, key, every=1, end=10, zeta=alpha)
    with pytest.raises(ValueError, match="grads"):
        dst.rigl(state, {"Dense_0": grads["Dense_0"]}, every=1, end=10)
