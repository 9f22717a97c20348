"""Per-leaf target sparsities against an independent NumPy implementation of the formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js
from jaxsparse import distributions as dist


def _params():
    return {
        "params": {
            "Conv_0": {"kernel": jnp.zeros((3, 3, 3, 16)), "bias": jnp.zeros(16)},
            "Conv_1": {"kernel": jnp.zeros((3, 3, 16, 32)), "bias": jnp.zeros(32)},
            "Dense_0": {"kernel": jnp.zeros((512, 128)), "bias": jnp.zeros(128)},
            "Dense_1": {"kernel": jnp.zeros((128, 10)), "bias": jnp.zeros(10)},
            "BatchNorm_0": {"scale": jnp.zeros(16)},
        }
    }


# kernels in jax.tree.leaves order (BatchNorm_0 sorts first but is not a kernel)
KERNELS = ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
SHAPES = [(3, 3, 3, 16), (3, 3, 16, 32), (512, 128), (128, 10)]
SIZES = np.array([int(np.prod(s)) for s in SHAPES], np.float64)
SPARSITIES = [0.0, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99]


# --- the independent reference ---------------------------------------------------------


def ref_densities(weights, sparsity, pinned=None):
    """Density eps * w_l per free layer, pinned layers fixed, sum alive = (1 - s) * N.

    Layers whose density would exceed 1 are all made dense at once and eps solved again
    (eps only grows when a layer is capped, so this matches capping one at a time).
    """
    weights = np.asarray(weights, np.float64)
    dens = np.full(len(SIZES), np.nan)
    for i, d in (pinned or {}).items():
        dens[i] = d
    budget = (1.0 - sparsity) * SIZES.sum()
    while True:
        free = np.isnan(dens)
        if not free.any():
            return dens
        fixed_alive = np.sum(np.where(free, 0.0, dens * SIZES))
        eps = (budget - fixed_alive) / np.sum(weights[free] * SIZES[free])
        over = free & (eps * weights > 1.0)
        if not over.any():
            dens[free] = eps * weights[free]
            return dens
        dens[over] = 1.0


def erk_weights(power=1.0):
    return [(sum(s) / np.prod(s)) ** power for s in SHAPES]


def er_weights():
    return [(s[-2] + s[-1]) / (s[-2] * s[-1]) for s in SHAPES]


def kernel_targets(tree):
    """Targets of the kernels (in KERNELS order); asserts the rest are exactly 0.0."""
    t = tree["params"]
    for name in KERNELS:
        assert t[name]["bias"] == 0.0
    assert t["BatchNorm_0"]["scale"] == 0.0
    assert jax.tree.structure(tree) == jax.tree.structure(_params())
    return np.array([t[name]["kernel"] for name in KERNELS])


def assert_global(targets, sparsity):
    alive = np.sum((1.0 - targets) * SIZES)
    assert alive == pytest.approx((1.0 - sparsity) * SIZES.sum(), rel=1e-9, abs=1e-6)
    assert np.all(targets >= -1e-12) and np.all(targets < 1.0)


# --- formulas --------------------------------------------------------------------------


@pytest.mark.parametrize("s", SPARSITIES)
def test_uniform(s):
    t = kernel_targets(dist.uniform(_params(), s))
    np.testing.assert_allclose(t, s, rtol=0, atol=1e-12)
    assert all(isinstance(x, float) for x in jax.tree.leaves(dist.uniform(_params(), s)))


@pytest.mark.parametrize("s", SPARSITIES)
def test_erk(s):
    t = kernel_targets(dist.erk(_params(), s))
    np.testing.assert_allclose(1.0 - t, ref_densities(erk_weights(), s), rtol=1e-9, atol=1e-12)
    assert_global(t, s)


def test_erk_densifies_and_orders_layers():
    t = kernel_targets(dist.erk(_params(), 0.5))
    # at 50% the small conv and the head would exceed density 1: both are dense
    assert t[0] == 0.0 and t[3] == 0.0
    assert 0.0 < t[1] < t[2]
    t = kernel_targets(dist.erk(_params(), 0.9))
    # (sum / prod) is largest for the head, smallest for Dense_0
    assert t[3] < t[0] < t[1] and t[2] == max(t)


@pytest.mark.parametrize("power", [0.5, 2.0])
@pytest.mark.parametrize("s", [0.5, 0.9])
def test_erk_power(power, s):
    t = kernel_targets(dist.erk(_params(), s, power=power))
    np.testing.assert_allclose(1 - t, ref_densities(erk_weights(power), s), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("s", SPARSITIES)
def test_erk_power_zero_is_uniform(s):
    e = dist.erk(_params(), s, power=0.0)
    u = dist.uniform(_params(), s)
    np.testing.assert_allclose(jax.tree.leaves(e), jax.tree.leaves(u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("s", SPARSITIES)
def test_er(s):
    t = kernel_targets(dist.er(_params(), s))
    np.testing.assert_allclose(1.0 - t, ref_densities(er_weights(), s), rtol=1e-9, atol=1e-12)
    assert_global(t, s)
    # over the last two dims only: Conv_0 (3, 16) has a larger weight than Conv_1 (16, 32)
    if s > 0.0:
        assert t[0] <= t[1]


@pytest.mark.parametrize("s", SPARSITIES)
def test_uniform_plus(s):
    t = kernel_targets(dist.uniform_plus(_params(), s))
    dens = ref_densities([1.0] * 4, s, pinned={0: 1.0})
    if 1.0 - dens[3] > 0.8:
        dens = ref_densities([1.0] * 4, s, pinned={0: 1.0, 3: 0.2})
    np.testing.assert_allclose(1.0 - t, dens, rtol=1e-9, atol=1e-12)
    assert t[0] == 0.0  # first prunable leaf dense
    assert t[3] <= 0.8 + 1e-12  # last at most 80% sparse
    assert_global(t, s)
    if s == 0.95:
        assert t[3] == pytest.approx(0.8) and t[1] == pytest.approx(t[2]) and t[1] > 0.95


# --- prune reaches the target ----------------------------------------------------------

_prune = jax.jit(js.prune)


@pytest.mark.parametrize("fn", [dist.uniform, dist.uniform_plus, dist.er, dist.erk])
@pytest.mark.parametrize("s", [0.5, 0.9, 0.98])
def test_prune_to_targets_reaches_global_sparsity(fn, s):
    params = _params()
    targets = fn(params, s)
    rng = np.random.default_rng(0)  # random scores (NumPy's: cheaper than eager threefry)
    scores = jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape, np.float32)), params)
    mask = _prune(scores, js.mask_like(params), jax.tree.map(jnp.float32, targets))
    dead = [int(m.size - jnp.sum(m)) for m in (mask["params"][k]["kernel"] for k in KERNELS)]
    want = kernel_targets(targets) * SIZES
    # each layer within one weight of its target, the whole within one weight per layer
    assert np.all(np.abs(np.array(dead) - want) <= 1.0)
    assert abs(sum(dead) - s * SIZES.sum()) <= len(KERNELS)
    assert abs(float(js.sparsity(mask)) - s) <= len(KERNELS) / SIZES.sum() + 1e-6
    # biases and norms untouched
    assert float(js.sparsity(mask, where="bias|scale")) == 0.0


# --- pins ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [dist.uniform, dist.er, dist.erk])
def test_dense_and_overrides_honoured(fn):
    s = 0.9
    t = kernel_targets(fn(_params(), s, dense=["Dense_1"], overrides={"Conv_0": 0.5}))
    assert t[3] == 0.0 and t[0] == pytest.approx(0.5)
    weights = {dist.uniform: [1.0] * 4, dist.er: er_weights(), dist.erk: erk_weights()}[fn]
    dens = ref_densities(weights, s, pinned={3: 1.0, 0: 0.5})
    np.testing.assert_allclose(1.0 - t, dens, rtol=1e-9, atol=1e-12)
    assert_global(t, s)


def test_uniform_plus_respects_user_pins():
    t = kernel_targets(dist.uniform_plus(_params(), 0.9, overrides={"Conv_1": 0.7}))
    assert t[0] == 0.0 and t[1] == pytest.approx(0.7)
    assert_global(t, 0.9)


def test_custom_where():
    # all floating leaves prunable: biases and norms get targets too
    t = dist.uniform(_params(), 0.6, where=js.all_leaves)
    assert all(x == pytest.approx(0.6) for x in jax.tree.leaves(t))
    # only the dense kernels
    t = dist.erk(_params(), 0.9, where=r"Dense_\d/kernel")
    p = t["params"]
    assert p["Conv_0"]["kernel"] == 0.0 and p["Conv_1"]["kernel"] == 0.0
    sizes = np.array([512 * 128, 128 * 10])
    w = np.array([(512 + 128) / (512 * 128), (128 + 10) / 1280])
    eps = 0.1 * sizes.sum() / np.sum(w * sizes)
    np.testing.assert_allclose(
        [1 - p["Dense_0"]["kernel"], 1 - p["Dense_1"]["kernel"]], eps * w, rtol=1e-9
    )


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [dist.uniform, dist.uniform_plus, dist.er, dist.erk])
@pytest.mark.parametrize("s", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval(fn, s):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fn(_params(), s)


@pytest.mark.parametrize("fn", [dist.uniform, dist.uniform_plus, dist.er, dist.erk])
def test_patterns_matching_nothing(fn):
    with pytest.raises(ValueError, match="Nope"):
        fn(_params(), 0.9, dense=["Nope"])
    with pytest.raises(ValueError, match="Nada"):
        fn(_params(), 0.9, overrides={"Nada": 0.5})
    with pytest.raises(ValueError, match="where="):
        fn(_params(), 0.9, where="nothing_here")


def test_override_outside_unit_interval():
    with pytest.raises(ValueError, match="Conv_0"):
        dist.erk(_params(), 0.9, overrides={"Conv_0": 1.0})


def test_pins_exceeding_budget():
    with pytest.raises(ValueError, match="budget"):
        dist.uniform(_params(), 0.9, dense=["Dense_0"])


def test_target_out_of_reach_when_every_leaf_is_pinned():
    from jaxsparse import distributions

    with pytest.raises(ValueError, match="uniform_plus: every prunable leaf is pinned"):
        distributions.uniform_plus({"only": jnp.ones((10, 10))}, 0.5)
    with pytest.raises(ValueError, match="erk: every prunable leaf is pinned"):
        distributions.erk({"a": jnp.ones((4, 4))}, 0.5, dense=["a"])
    # pinned leaves that happen to meet the target exactly are fine
    t = distributions.uniform({"a": jnp.ones((4, 4))}, 0.5, overrides={"a": 0.5})
    assert t["a"] == 0.5


def test_zero_size_leaves_stay_dense_and_do_not_break_the_solve():
    p = {"empty": jnp.ones((0, 10)), "a": jnp.ones((20, 10)), "b": jnp.ones((10, 5))}
    for fn in (dist.erk, dist.er, dist.uniform):
        t = fn(p, 0.5)
        assert t["empty"] == 0.0
        alive = (1 - t["a"]) * 200 + (1 - t["b"]) * 50
        assert alive == pytest.approx(125.0)
