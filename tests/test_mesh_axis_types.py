"""Pruning, masked() and imp_round on a mesh with Auto and with Explicit axes.

``jax.make_mesh`` makes Explicit axes by default. There a select between differently
sharded operands, a reshape of a sharded axis or a cumulative sum along one are type
errors, so everything jaxsparse does per weight must stay elementwise or a count. Each
test runs on both axis types and compares with one device: masks bit for bit, and masks
keep their params' sharding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsparse as js

SPECS = {
    "Conv_0": {"kernel": P(None, None, None, "model"), "bias": P("model")},
    "Dense_0": {"kernel": P(None, "model"), "bias": P("model")},
    "Dense_1": {"kernel": P("data", "model"), "bias": P()},
}


def _params(ties: bool):
    k = jax.random.split(jax.random.key(3), 3)
    p = {
        "Conv_0": {"kernel": jax.random.normal(k[0], (3, 3, 2, 8)), "bias": jnp.zeros(8)},
        "Dense_0": {"kernel": jax.random.normal(k[1], (64, 32)), "bias": jnp.zeros(32)},
        "Dense_1": {"kernel": jax.random.normal(k[2], (32, 8)), "bias": jnp.ones(4)},
    }
    if ties:  # a handful of distinct values: every threshold falls inside a tie
        p = jax.tree.map(lambda a: jnp.round(a * 2.0) / 2.0, p)
    return p


def _mesh(axis_type):
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)


def _put(tree, mesh):
    return jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), tree, SPECS)


def _equal(a_tree, b_tree):
    for a, b in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _same_sharding(mask, params):
    """Each mask leaf is laid out like its param. Under Explicit axes the layout is part
    of the type, so every leaf; under Auto axes XLA chooses, and a leaf computed from
    nothing but a constant (a never-pruned bias's all-True mask) may come out replicated,
    so only the pruned kernels, computed from their scores, are checked."""
    explicit = jax.sharding.AxisType.Explicit in jax.tree.leaves(params)[0].sharding.mesh.axis_types
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params), strict=True):
        if not explicit and p.ndim < 2:
            continue
        assert m.sharding.is_equivalent_to(p.sharding, p.ndim), (m.sharding, p.sharding)


AXIS_TYPES = pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])


@AXIS_TYPES
@pytest.mark.parametrize(
    ("scope", "ties"), [("global", True), ("layerwise", True), ("global", False)]
)
def test_prune_equals_one_device_and_keeps_sharding(axis_type, scope, ties):
    params = _params(ties)

    def two_rounds(p):
        m = js.prune(js.scores.magnitude(p), js.mask_like(p), 0.5, scope=scope)
        return m, js.prune(js.scores.magnitude(p), m, 0.3, scope=scope)

    single = jax.jit(two_rounds)(params)
    mesh = _mesh(axis_type)
    sharded_params = _put(params, mesh)
    with jax.set_mesh(mesh):
        out = jax.jit(two_rounds)(sharded_params)
    _equal(out, single)
    _same_sharding(out[1], sharded_params)
    # exact counts: round(0.5 n) then round(0.3 n_alive) of the kernels removed
    n = 3 * 3 * 2 * 8 + 64 * 32 + 32 * 8
    alive = n - round(0.5 * n) if scope == "global" else None
    if alive is not None:
        kernels = [np.asarray(m) for m in jax.tree.leaves(out[1]) if m.ndim >= 2]
        assert sum(int(k.sum()) for k in kernels) == alive - round(0.3 * alive)


@AXIS_TYPES
def test_random_scores_and_shuffle_keep_sharding(axis_type):
    mesh = _mesh(axis_type)
    params = _put(_params(False), mesh)
    with jax.set_mesh(mesh):

        @jax.jit
        def f(p, key):
            m = js.prune(js.scores.random(key, p), js.mask_like(p), 0.7, scope="global")
            return m, js.shuffle_mask(jax.random.key(1), m)

        mask, shuffled = f(params, jax.random.key(0))
    if axis_type == AxisType.Explicit:  # under Auto, XLA lays out random numbers as it likes
        _same_sharding(mask, params)
        _same_sharding(shuffled, params)
    for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(shuffled)):
        assert int(np.sum(a)) == int(np.sum(b))
    assert any(not np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, (mask, shuffled))))


def _loss(params, x):
    """Elementwise in the params (a model's matmuls on Explicit axes need the user's own
    out_sharding annotations, which are not what is tested here); x shifts it per call."""
    return sum(jnp.sum(jnp.sin(3.0 * p + x) + 0.5 * p**2) for p in jax.tree.leaves(params))


@AXIS_TYPES
@pytest.mark.parametrize(
    ("given_mask", "packed"), [("mask_like", False), ("replicated", False), ("mask_like", True)]
)
def test_masked_step_on_mesh(axis_type, given_mask, packed):
    """A masked step works with masks laid out like the params and with replicated masks
    (a user's own), held as bools or as bits; it equals one device, and pruned weights
    stay exactly zero."""
    params = _params(False)
    x = 0.1
    mask = js.prune(js.scores.magnitude(params), js.mask_like(params), 0.6, scope="global")
    inner = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(1e-2, momentum=0.9))
    tx = js.masked(inner, packed=packed)

    def steps(p, m):
        s = tx.init(p)
        s = js.set_mask(s, m)
        for _ in range(3):
            u, s = tx.update(jax.grad(_loss)(p, x), s, p)
            p = optax.apply_updates(p, u)
        return p

    single = jax.jit(steps)(params, mask)
    mesh = _mesh(axis_type)
    sharded = _put(params, mesh)
    with jax.set_mesh(mesh):
        m = js.mask_like(sharded) if given_mask == "mask_like" else mask
        if given_mask == "mask_like":
            _same_sharding(m, sharded)
            m = jax.tree.map(jnp.logical_and, m, _put(mask, mesh))
        out = jax.jit(steps)(sharded, m)
    for a, b, k in zip(*map(jax.tree.leaves, (out, single, mask))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(a)[~np.asarray(k)] == 0.0)
    assert sum(int(np.sum(~np.asarray(k))) for k in jax.tree.leaves(mask)) > 0
    if packed:  # bits where a shard holds whole bytes: Dense_0's 32 columns over 4 devices
        with jax.set_mesh(mesh):
            held = jax.jit(lambda p: tx.init(p).mask)(sharded)
        explicit = axis_type == AxisType.Explicit
        assert held["Dense_0"]["kernel"].dtype == jnp.uint8
        if explicit:  # the bits are split like their weights (under Auto, XLA chooses)
            assert held["Dense_0"]["kernel"].sharding.spec == P(None, "model")
        # Conv_0's 8 channels over 4 devices are 2 a shard: under Explicit axes, bools
        assert held["Conv_0"]["kernel"].dtype == (jnp.bool_ if explicit else jnp.uint8)


@AXIS_TYPES
@pytest.mark.parametrize("packed", [False, True])
def test_sparse_train_state_and_imp_round_on_mesh(axis_type, packed):
    x = 0.1

    def run(params):
        tx = js.masked(optax.adam(1e-2), packed=packed)
        state = js.SparseTrainState.create(apply_fn=None, params=params, tx=tx, rewind_step=1)
        for _ in range(2):
            for _ in range(3):
                state = state.apply_gradients(grads=jax.grad(_loss)(state.params, x))
            state = js.imp_round(state, fraction=0.4, scope="global")
        return state.params, state.mask

    single = jax.jit(run)(_params(False))
    mesh = _mesh(axis_type)
    sharded = _put(_params(False), mesh)
    with jax.set_mesh(mesh):
        params, mask = jax.jit(run)(sharded)
    _equal(mask, single[1])
    if packed and axis_type == AxisType.Auto:
        # bits split 2 entries a shard (Conv_0's and Dense_1's 8 columns over 4 devices)
        # would straddle bytes, and XLA lays those out as it likes; Dense_0's are whole
        mask, sharded = mask["Dense_0"], sharded["Dense_0"]
    _same_sharding(mask, sharded)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
