"""The masked step and global pruning under pmap and under jit over a sharded Mesh.

The root conftest gives 8 fake CPU devices; results must match one device: masks bit for
bit, params equal.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsparse as js

N_DEV = 8
AMOUNT = 0.3
STEPS = 5


def _params():
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "Dense_0": {"kernel": jax.random.normal(k[0], (16, 24)), "bias": jnp.zeros(24)},
        "Dense_1": {"kernel": jax.random.normal(k[1], (24, 8)), "bias": 0.1 * jnp.ones(8)},
    }


def _batch():
    kx, ky = jax.random.split(jax.random.key(1))
    return jax.random.normal(kx, (32, 16)), jax.random.normal(ky, (32, 8))


def loss_fn(params, batch):
    x, y = batch
    h = jnp.tanh(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    out = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    return jnp.mean((out - y) ** 2)


TX = js.masked(optax.adam(1e-2))


@jax.jit
def _prune(params, mask):
    return js.prune(js.scores.magnitude(params), mask, AMOUNT, scope="global")


def _train(params, opt_state, batch, grad_reduce=lambda g: g):
    def body(carry, _):
        p, s = carry
        g = grad_reduce(jax.grad(loss_fn)(p, batch))
        u, s = TX.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (params, opt_state), None, length=STEPS)[0]


def _round(params, opt_state, batch, grad_reduce=lambda g: g):
    """Prune globally, set the mask, train a few masked steps, prune again."""
    mask = _prune(params, js.get_mask(opt_state))
    opt_state = js.set_mask(opt_state, mask)
    params, opt_state = _train(params, opt_state, batch, grad_reduce)
    mask2 = _prune(params, mask)
    return params, opt_state, mask, mask2


@pytest.fixture(scope="module")
def single_device():
    params = _params()
    out = jax.jit(_round)(params, TX.init(params), _batch())
    return jax.device_get(out)


def _check(single, params, mask, mask2):
    s_params, _, s_mask, s_mask2 = single
    for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(s_mask)):
        np.testing.assert_array_equal(np.asarray(a), b)
    for a, b in zip(jax.tree.leaves(mask2), jax.tree.leaves(s_mask2)):
        np.testing.assert_array_equal(np.asarray(a), b)
    for a, b, m in zip(*map(jax.tree.leaves, (params, s_params, s_mask))):
        a = np.asarray(a)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert np.all(a[~m] == 0.0)
    # the test has teeth: something was pruned in each round, and the params moved
    assert sum(int(np.sum(~m)) for m in jax.tree.leaves(s_mask)) > 0
    n_kernel = 16 * 24 + 24 * 8
    alive1 = n_kernel - round(AMOUNT * n_kernel)
    assert sum(int(np.sum(m)) for m in jax.tree.leaves(s_mask)) == alive1 + 24 + 8
    alive2 = alive1 - round(AMOUNT * alive1)
    assert sum(int(np.sum(m)) for m in jax.tree.leaves(s_mask2)) == alive2 + 24 + 8


def test_eight_devices():
    assert jax.device_count() >= N_DEV


def test_pmap_matches_one_device(single_device):
    params = _params()
    opt_state = TX.init(params)
    x, y = _batch()
    shard = lambda a: a.reshape((N_DEV, a.shape[0] // N_DEV, *a.shape[1:]))  # noqa: E731
    replicate = lambda t: jax.tree.map(lambda a: jnp.broadcast_to(a, (N_DEV, *a.shape)), t)  # noqa: E731

    reduce = functools.partial(jax.lax.pmean, axis_name="d")
    step = jax.pmap(functools.partial(_round, grad_reduce=lambda g: reduce(g)), axis_name="d")
    params_r, _, mask_r, mask2_r = step(
        replicate(params), replicate(opt_state), (shard(x), shard(y))
    )
    # every replica holds the same bits
    for tree in (params_r, mask_r, mask2_r):
        for leaf in jax.tree.leaves(tree):
            leaf = np.asarray(leaf)
            for d in range(1, N_DEV):
                np.testing.assert_array_equal(leaf[d], leaf[0])
    first = lambda t: jax.tree.map(lambda a: np.asarray(a)[0], t)  # noqa: E731
    _check(single_device, first(params_r), first(mask_r), first(mask2_r))


def test_pmap_global_prune_alone_is_bit_identical():
    params = jax.tree.map(lambda a: a * 3.0 + 1.0, _params())
    mask = js.mask_like(params)
    single = jax.jit(_prune)(params, mask)
    rep = jax.tree.map(lambda a: jnp.broadcast_to(a, (N_DEV, *a.shape)), (params, mask))
    out = jax.pmap(_prune)(*rep)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(single)):
        a, b = np.asarray(a), np.asarray(b)
        for d in range(N_DEV):
            np.testing.assert_array_equal(a[d], b)


def _by_rows(tree):
    """Every array sharded on its leading dim (all divisible by 8), scalars replicated."""
    mesh = Mesh(np.array(jax.devices()[:N_DEV]), ("x",))
    return jax.tree.map(
        lambda a: jax.device_put(a, NamedSharding(mesh, P("x") if a.ndim else P())), tree
    )


def test_jit_over_mesh_matches_one_device(single_device):
    params = _by_rows(_params())
    opt_state = _by_rows(TX.init(_params()))
    batch = _by_rows(_batch())
    assert params["Dense_0"]["kernel"].sharding.shard_shape((16, 24)) == (2, 24)
    assert len(params["Dense_0"]["kernel"].addressable_shards) == N_DEV

    params_o, opt_o, mask, mask2 = jax.jit(_round)(params, opt_state, batch)
    _check(single_device, params_o, mask, mask2)
    # the masks come back as global arrays spread over the mesh, like their params
    for m in jax.tree.leaves(mask2):
        assert len(m.sharding.device_set) == N_DEV
    for a, b in zip(jax.tree.leaves(js.get_mask(opt_o)), jax.tree.leaves(mask)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jit_over_mesh_global_prune_alone_is_bit_identical():
    params = jax.tree.map(lambda a: a * 3.0 + 1.0, _params())
    mask = _prune(js.scores.random(jax.random.key(5), params), js.mask_like(params))
    prune = jax.jit(_prune)
    single = prune(params, mask)
    sharded = prune(_by_rows(params), _by_rows(mask))
    assert len(jax.tree.leaves(sharded)[0].sharding.device_set) == N_DEV
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit])
def test_fsdp_gpt_tree_matches_one_device_and_gathers_no_kernel(axis_type):
    """A GPT-shaped tree (the bench's 1.3B stack at width 128, 1 layer), every leaf split
    over the 8 devices along its largest divisible axis as the ``sharded`` bench section
    does: global and layerwise masks equal one device's bit for bit, a compiled prune
    all-gathers no more than the search's strided samples (the shards are counted where
    they lie), and its temporaries stay under 4x a device's params. (``imp_round`` and
    ``masked()`` on meshes: ``tests/test_mesh_axis_types.py``.)
    """
    from experiments.bench import model_trees, sharded

    shapes = model_trees._gpt(128, 1, 4, vocab=2048)()
    rng = np.random.default_rng(0)
    values = jax.tree.map_with_path(lambda p, s: model_trees._value(p, s, rng), shapes)
    values = jax.tree.map(lambda v: np.round(v * 64) / 64, values)  # ties at thresholds
    mesh = jax.make_mesh((N_DEV,), ("fsdp",), axis_types=(axis_type,))

    def put(v):
        return jax.device_put(v, NamedSharding(mesh, sharded.fsdp_spec(v.shape, N_DEV)))

    params = jax.tree.map(put, values)
    assert sum(x.sharding.spec != P() for x in jax.tree.leaves(params)) >= 12
    bound = sharded.sample_bound_bytes(shapes)  # the search's strided samples
    assert bound < sharded.smallest_matrix_bytes(shapes) * 4
    for scope in ("global", "layerwise"):
        prune = jax.jit(lambda s, m, scope=scope: js.prune(s, m, 0.3, scope=scope))
        want = prune(jax.tree.map(jnp.asarray, values), js.mask_like(values))
        with jax.set_mesh(mesh):
            mask = js.mask_like(params)
            got = prune(params, mask)
            compiled = prune.lower(params, mask).compile()
        text = compiled.as_text()
        # no full-size temporary on every device (Explicit axes once built the tie
        # search's positions unsharded: 9x a device's params on a wider GPT)
        per_device = sum(x.size * 4 for x in jax.tree.leaves(values)) / N_DEV
        temp = compiled.memory_analysis().temp_size_in_bytes / per_device
        assert temp < 4, (scope, temp)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert max(sharded.gathers(text), default=0) <= bound, scope


@pytest.mark.parametrize(
    ("axis_type", "scope"),
    [(jax.sharding.AxisType.Auto, "global"), (jax.sharding.AxisType.Explicit, "layerwise")],
)
def test_many_equal_leaves_sharded_with_ties_match_numpy(axis_type, scope):
    """ResNet-50's 161 leaves (narrow), scores with wide ties, every leaf split FSDP-style
    over the 8 devices: the leaves are counted where they lie, and with this many equal
    shapes the tie search's positions start at offsets XLA cannot fold
    (``jaxsparse._select._opaque``). The masks equal NumPy's, two rounds."""
    from experiments.bench import sharded
    from jaxsparse._select import _shares_kernels
    from tests.test_packed import _narrow_resnet
    from tests.test_pruning import ref_global, ref_layerwise

    params = _narrow_resnet(0, ties=True)
    leaves = jax.tree.leaves(params)
    assert _shares_kernels(leaves)
    sel = [x.ndim >= 2 for x in leaves]
    mesh = jax.make_mesh((N_DEV,), ("fsdp",), axis_types=(axis_type,))

    def put(v):
        return jax.device_put(v, NamedSharding(mesh, sharded.fsdp_spec(v.shape, N_DEV)))

    scores = jax.tree.map(put, js.scores.magnitude(params))
    assert sum(x.sharding.spec != P() for x in jax.tree.leaves(scores)) >= 50
    ref = ref_global if scope == "global" else ref_layerwise
    prune = jax.jit(lambda s, m: js.prune(s, m, 0.3, scope=scope))
    want = [np.ones(x.shape, bool) for x in leaves]
    with jax.set_mesh(mesh):
        mask = jax.tree.map(put, js.mask_like(params))
        for _ in range(2):  # a second round prunes among the survivors
            mask = prune(scores, mask)
            want = ref([np.abs(np.asarray(x)) for x in leaves], want, 0.3, sel=sel)
            for got, w in zip(jax.tree.leaves(mask), want, strict=True):
                np.testing.assert_array_equal(np.asarray(got), w)
