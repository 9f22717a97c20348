"""Schedules against their formulas at sample steps; ``gradual_prune`` reaching the final
sparsity exactly inside one compiled step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsparse as js
from jaxsparse import schedules
from jaxsparse.optim import mask_moments

SIZES = {"Dense_0": (8, 16), "Dense_1": (16, 4)}  # 128 and 64 weights
TX = js.masked(optax.sgd(0.05))  # one object: it is static metadata of the state


def test_one_shot():
    s = schedules.one_shot(0.9, step=100)
    got = [float(s(t)) for t in (0, 99, 100, 5000)]
    np.testing.assert_array_equal(got, np.float32([0, 0, 0.9, 0.9]))
    assert float(jax.jit(s)(jnp.int32(100))) == np.float32(0.9)


@pytest.mark.parametrize("power", [3, 1, 2.5])
def test_polynomial_matches_zhu_gupta(power):
    s_f, s_i, t0, end = 0.85, 0.1, 20, 220  # n Δt = 200
    s = schedules.polynomial(s_f, begin=t0, end=end, initial=s_i, power=power)
    for t in (0, 20, 21, 70, 120, 219, 220, 1000):
        tt = min(max(t, t0), end)
        want = s_f + (s_i - s_f) * (1 - (tt - t0) / (end - t0)) ** power
        np.testing.assert_allclose(float(s(t)), want, rtol=1e-6, atol=1e-7)
    assert float(s(end)) == np.float32(s_f)  # the final target exactly
    # by hand: cubic from 0 to 0.8 over [0, 100] at t = 50: 0.8 - 0.8 / 8
    np.testing.assert_allclose(float(schedules.polynomial(0.8, begin=0, end=100)(50)), 0.7)


def test_imp_geometric():
    s = schedules.imp_geometric(0.2, every=10, rounds=3, start=5)
    for t, r in ((0, 0), (4, 0), (5, 1), (14, 1), (15, 2), (25, 3), (1000, 3)):
        np.testing.assert_allclose(float(s(t)), 1 - 0.8**r, rtol=1e-6, atol=1e-7)


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="sparsity"):
        schedules.one_shot(1.0)
    with pytest.raises(ValueError, match="final"):
        schedules.polynomial(-0.1, begin=0, end=10)
    with pytest.raises(ValueError, match=r"end \(10\) must come after begin \(10\)"):
        schedules.polynomial(0.5, begin=10, end=10)
    with pytest.raises(ValueError, match="initial"):
        schedules.polynomial(0.5, begin=0, end=10, initial=0.6)
    with pytest.raises(ValueError, match="power"):
        schedules.polynomial(0.5, begin=0, end=10, power=0)
    with pytest.raises(ValueError, match="every"):
        schedules.imp_geometric(0.2, every=0, rounds=3)
    with pytest.raises(ValueError, match="rate"):
        schedules.imp_geometric(1.2, every=1, rounds=3)
    state = make_state()
    for every in (0, -3):
        with pytest.raises(ValueError, match="every"):
            schedules.gradual_prune(state, schedules.one_shot(0.5), every)
    with pytest.raises(ValueError, match="scope"):
        schedules.gradual_prune(state, schedules.one_shot(0.5), 1, scope="all")


def make_state(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        name: {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32), "bias": jnp.ones(s[1])}
        for name, s in SIZES.items()
    }
    return js.SparseTrainState.create(apply_fn=None, params=params, tx=TX)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_gradual_prune_follows_schedule_and_ends_exactly(scope):
    s_f, t0, end, every = 0.9, 10, 110, 10
    sched = schedules.polynomial(s_f, begin=t0, end=end)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, grads):
        state = state.apply_gradients(grads=grads)
        return schedules.gradual_prune(state, sched, every, scope=scope)

    state = make_state()
    rng = np.random.default_rng(1)
    sizes = [a * b for a, b in SIZES.values()]
    prev = 0
    for _ in range(130):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), state.params)
        state = step(state, grads)
        t = int(state.step)
        dead = [n - int(state.mask[k]["kernel"].sum()) for k, n in zip(SIZES, sizes)]
        # the target in effect: that of the last multiple of every (float32, like the code)
        target = float(sched(t - t % every))
        if scope == "layerwise":
            assert dead == [round(target * n) for n in sizes]
        else:
            assert sum(dead) == round(target * sum(sizes))
        assert sum(dead) >= prev
        prev = sum(dead)
        for k in SIZES:  # pruned weights exactly zero, biases never pruned
            m = np.asarray(state.mask[k]["kernel"])
            assert not np.asarray(state.params[k]["kernel"])[~m].any()
            assert bool(state.mask[k]["bias"].all())
    # reached the final sparsity exactly
    if scope == "layerwise":
        assert dead == [115, 58]  # round(0.9 * 128), round(0.9 * 64)
    else:
        assert sum(dead) == 173  # round(0.9 * 192)


def test_gradual_prune_takes_any_score_and_skips_off_steps():
    def small_first(p):  # prefers small weights: the largest |w| go
        return jax.tree.map(lambda x: -jnp.abs(x), p)

    run = jax.jit(
        lambda s: schedules.gradual_prune(s, schedules.one_shot(0.5), 5, score_fn=small_first)
    )
    state = make_state()
    same = run(state.replace(step=jnp.int32(7)))  # off-step: unchanged
    chex.assert_trees_all_equal(same.params, state.params)
    chex.assert_trees_all_equal(same.mask, state.mask)
    new = run(state.replace(step=jnp.int32(10)))
    w = np.abs(np.asarray(state.params["Dense_1"]["kernel"])).ravel()
    m = np.asarray(new.mask["Dense_1"]["kernel"]).ravel()
    assert m.sum() == 32 and w[m].max() < w[~m].min()


def test_gradual_prune_equals_eager_moment_zeroing():
    """gradual_prune leaves the moments of newly pruned weights to masked(), which zeroes
    them as the next update reads them. Against a reference that zeroes them at once (the
    earlier behaviour): masks equal at every step; params at every step and moments after
    every update equal to float32 rounding (XLA fuses the two programs differently, which
    can move a last bit)."""
    sched, every = schedules.polynomial(0.8, begin=0, end=60), 10
    tx = js.masked(optax.adam(0.05))

    def lazy(state, grads):
        return schedules.gradual_prune(state.apply_gradients(grads=grads), sched, every)

    def eager(state, grads):
        state = lazy(state, grads)
        m = js.get_mask(state.opt_state)
        return state.replace(
            opt_state=js.set_mask(mask_moments(state.opt_state, m, state.params), m)
        )

    params = make_state().params
    a = b = js.SparseTrainState.create(apply_fn=None, params=params, tx=tx)
    lazy, eager = jax.jit(lazy), jax.jit(eager)
    rng = np.random.default_rng(3)
    stale = 0
    for _ in range(70):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), a.params)
        a, b = lazy(a, grads), eager(b, grads)
        chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_equal(a.mask, b.mask)
        if int(a.step) % every == 0:  # pruned just now: a's moments of those are stale
            stale += int(a.step) <= 60
            continue
        chex.assert_trees_all_close(a.opt_state, b.opt_state, rtol=1e-5, atol=1e-7)
    assert stale == 6 and float(js.sparsity(a.mask)) > 0.5
